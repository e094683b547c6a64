"""The vision stages in the pipeline: quickstart_vision and vlm_pretrain at smoke size, end to end."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from experiments.run import main
from k15.models.vlm import load_vlm
from tests.tiny import SMOKE


@pytest.fixture(scope="module")
def vision_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("qv") / "run"
    assert main(["quickstart_vision", *SMOKE, "rl.sample_every_n_iterations=1", f"run.dir={run}"]) == 0
    return run


def decoder_weights(model_dir):
    return load_file(str(model_dir / "decoder" / "model.safetensors"))


def test_the_tower_stage_leaves_the_decoder_bit_identical_and_joint_training_moves_it(vision_run):
    sft = load_file(str(vision_run / "sft" / "model" / "model.safetensors"))
    tower = decoder_weights(vision_run / "vision_tower" / "model")
    joint = decoder_weights(vision_run / "vision_joint" / "model")
    assert sft.keys() == tower.keys()
    assert all(torch.equal(sft[k], tower[k]) for k in sft)  # frozen: not one bit moved
    assert any(not torch.equal(tower[k], joint[k]) for k in tower)
    vision = [load_file(str(vision_run / stage / "model" / "vision.safetensors")) for stage in ("vision_tower", "vision_joint")]
    assert any(not torch.equal(vision[0][k], vision[1][k]) for k in vision[0])


def test_rl_runs_on_image_prompts_and_logs_their_images(vision_run):
    prompts = [json.loads(line) for line in (vision_run / "rl" / "prompts.jsonl").read_text().splitlines()]
    assert prompts and all(p["images"] for p in prompts)
    assert {p["kind"] for p in prompts} == {"problem", "count"}
    # (that an image-prompt iteration moves every part is tests/vision/test_vision_rl.py's: at smoke size
    # every sample earns 0 and no gradient flows)
    vlm, _ = load_vlm(vision_run / "rl" / "model")  # the RL export is a VLM
    assert vlm.projector.cfg.kind == "embedding_softmax"
    acc = EventAccumulator(str(vision_run / "tb" / "rl"), size_guidance={"images": 0})
    acc.Reload()
    assert any(tag.startswith("rollouts/sample") for tag in acc.Tags()["images"])
    assert "reward/reward_mean" in acc.Tags()["scalars"]


def test_eval_reports_every_image_task(vision_run):
    summary = json.loads((vision_run / "summary.json").read_text())
    for name in ("vision_joint", "rl"):
        result = summary["eval"][name]
        assert result["task"] == "problem" and set(result["tasks"]) == {"problem", "count"}
        assert result["pass@1"] == result["tasks"]["problem"]["pass@1"]
    assert (vision_run / "data" / "shards" / "ocr").is_dir()  # the synthetic sources, written once


def test_long_context_stage_raises_the_rope_base_and_context(tmp_path):
    run = tmp_path / "run"
    assert main(["vlm_pretrain", *SMOKE, "stages=[pretrain,vision_tower,long_context]", "eval.models=[]",
                 f"run.dir={run}"]) == 0
    vlm, _ = load_vlm(run / "long_context" / "model")
    assert vlm.config.rope_parameters["rope_theta"] == 40000.0
    assert vlm.config.max_position_embeddings == 128  # the schedule's longest rows (smoke: 64 -> 128)
