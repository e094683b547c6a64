"""Asynchronous RL on image prompts (rl.async.workers with a VLM policy): a rollout worker builds k15's VLM
or a transformers VLM from its skeleton (tied weights, the towers' non-persistent rotary buffers) and
generates exactly what the in-process vision engine generates; RLModule trains a VLM on image prompts
through a worker; the command line runs a Qwen2.5-VL checkpoint's RL asynchronously."""

from __future__ import annotations

import copy
import json

import pytest
import torch

from experiments.run import main
from k15.config import ModelConfig, RLConfig
from k15.data.vision_prompts import image_prompt, write_vision_prompt_set
from k15.models.hf_vlm import load_hf_vlm
from k15.models.policy import load_policy
from k15.modules.rl import RLModule
from k15.rl.workers import RolloutRequest, RolloutWorkers
from k15.rl.workers.worker import WorkerConfig, build_model, skeleton_of
from k15.rollout.sampling import SamplingParams
from k15.rollout.vision import VisionRolloutEngine
from tests.rl.runs import scalars
from tests.vision.test_mrope_rollout import mixed_prompts, save_qwen_vl
from tests.vision.test_own_vlm_cli import vision_rl_args
from tests.vision.test_pixtral_rows import engine_prompts
from tools.make_tiny_vlm_checkpoint import make_tiny_vlm_checkpoint

BATCH, SEQ = 8, 160


@pytest.fixture(scope="module")
def prompt_set(tmp_path_factory):
    return write_vision_prompt_set(tmp_path_factory.mktemp("vision_prompts"), ["problem", "count", "chart"], n=9, seed=0)


def policy_and_prompts(kind: str, tmp_path, tok, make_vlm, prompt_set):
    """A VLM of `kind` and image prompts as RLModule hands them to an engine (0-2 images, different sizes)."""
    if kind == "k15":
        vlm = make_vlm(kind="embedding_softmax")
        return vlm, [image_prompt(r, tok, vlm) for r in prompt_set[:4]]
    if kind == "qwen2_5_vl":
        save_qwen_vl(kind, tmp_path)  # a bare checkpoint (no tokenizer): prompts are ids
        vlm = load_hf_vlm(tmp_path).eval()
        return vlm, mixed_prompts(vlm)
    vlm, hf_tok = load_policy(ModelConfig(), make_tiny_vlm_checkpoint(tmp_path / kind, kind))
    return vlm.eval(), engine_prompts(vlm, hf_tok)


def test_the_skeleton_holds_no_weights_and_builds_the_same_model(tok, make_vlm):
    vlm = make_vlm()
    skeleton = skeleton_of(vlm)
    assert all(t.is_meta for t in list(skeleton.module.parameters()) + list(skeleton.module.buffers()))
    assert not any(t.is_meta for t in vlm.parameters())  # the trainer's model is untouched
    assert set(skeleton.buffers) >= {"tower.inv_freq_h", "tower.inv_freq_w"}  # not published: carried
    built = build_model(WorkerConfig(skeleton, BATCH, SEQ))
    decoder = built.decoder
    assert decoder.lm_head.weight is decoder.model.embed_tokens.weight  # tied again
    for name, value in skeleton.buffers.items():
        assert torch.equal(built.get_buffer(name), vlm.get_buffer(name)), name


@pytest.mark.parametrize("kind", ["k15", "qwen2_5_vl", "llava_pixtral"])
def test_a_worker_generates_what_the_in_process_vision_engine_does(kind, tmp_path, tok, make_vlm, prompt_set):
    vlm, prompts = policy_and_prompts(kind, tmp_path, tok, make_vlm, prompt_set)
    params = SamplingParams(max_new_tokens=10, temperature=1.0)
    expected = VisionRolloutEngine(vlm, max_batch_size=BATCH, max_seq_len=SEQ).generate(
        prompts, params, torch.Generator().manual_seed(11))
    moved = copy.deepcopy(vlm)  # as after an optimizer step: decoder, projector and tower all change
    with torch.no_grad():
        for p in moved.parameters():
            p.add_(0.05 * torch.randn_like(p))
    expected_moved = VisionRolloutEngine(moved, max_batch_size=BATCH, max_seq_len=SEQ).generate(
        prompts, params, torch.Generator().manual_seed(11))
    with RolloutWorkers(1, vlm, max_batch_size=BATCH, max_seq_len=SEQ, heartbeat_timeout_s=60.0) as pool:
        pool.wait_ready(120.0)
        pool.submit(RolloutRequest(0, prompts, params, seed=11))
        result = pool.get(timeout=120.0)
        assert pool.publish(moved) == 1
        pool.submit(RolloutRequest(1, prompts, params, seed=11))
        after = pool.get(timeout=120.0)
    assert sum(map(len, result.tokens)) > len(prompts)  # sampled text, not an immediate stop
    for got, want in ((result, expected), (after, expected_moved)):  # bit-exact: same code, one thread each
        assert got.tokens == want.tokens and got.finish_reasons == want.finish_reasons
        assert all(torch.equal(torch.tensor(a), torch.tensor(b)) for a, b in zip(got.logprobs, want.logprobs))
    assert (result.version, after.version) == (0, 1) and after.logprobs != result.logprobs  # the new weights were used


def test_rlmodule_trains_a_vlm_on_image_prompts_through_a_worker(tok, make_vlm, prompt_set):
    vlm = make_vlm(kind="embedding_softmax").train()
    cfg = RLConfig(prompts_per_iteration=3, samples_per_prompt=4, max_new_tokens=24, epochs=1, lr=1e-3)
    cfg.asynchronous.workers = 1
    module = RLModule(vlm, tok, prompt_set, cfg, max_seq_len=128, seed=0)
    module.log = lambda *a, **k: None  # no trainer attached
    module.manual_backward = lambda loss: loss.backward()
    logged = []
    module.log_iteration = lambda metrics, rollout, rewards: logged.append(metrics)

    def alternating(rollout):  # an untrained model earns nothing: give half of each group a reward
        correct = torch.arange(len(rollout.samples)) % 2 == 0
        return correct.float(), correct

    module.score = alternating
    before = {k: v.clone() for k, v in vlm.state_dict().items()}
    module.on_fit_start()
    try:
        for _ in range(2):
            module.training_step(None, 0)
    finally:
        module.close_workers()
    assert module.iteration == 2 and module.workers is None
    changed = {k.split(".")[0] for k, v in vlm.state_dict().items() if not torch.equal(v, before[k])}
    assert {"decoder", "tower", "projector"} <= changed  # the gradient reached the tower through the images
    first, second = logged
    assert first["async/staleness_max"] == 0.0 and second["async/staleness_max"] <= 1.0
    # version-0 tokens scored by the training forward at iteration 0: the worker's log-probs are the policy's
    assert first["rl/logp_mismatch"] < 1e-4


def test_vision_rl_runs_asynchronously_from_the_command_line(tmp_path, capsys):
    ckpt = make_tiny_vlm_checkpoint(tmp_path / "ckpt", "qwen2_5_vl")
    run = tmp_path / "run"
    code = main(vision_rl_args(ckpt, run, "rl.partial.budget=6", "rl.async.workers=1"))
    assert code == 0, capsys.readouterr().err[-2000:]
    assert json.loads((run / "summary.json").read_text())["eval"]["rl"]["pass@1"] >= 0.0
    curves = scalars(run)
    assert len(curves["async/samples_per_s"]) == 2 and "rollout/partial_frac" in curves
