"""RL on an easy setting must raise the reward by a margin a broken loss cannot reach.

A tiny model is fine-tuned briefly on one-operation problems (short answers only), so it writes the
answer format with varied digits. The RL prompt set (a user JSONL file, through the same loader)
rewards one answer, "7", on every prompt: a single global behaviour, learnable in a few iterations,
where per-problem facts would take many. The negative control flips the sign of the advantages:
its reward must not rise.
"""

import json

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import k15.modules.rl as rl_module
from k15.config import apply_overrides, base
from k15.pipeline import run_pipeline
from k15.runs import create_run_dir

MODEL = ["model.hidden_size=48", "model.num_layers=2", "model.num_heads=2", "model.num_kv_heads=2",
         "model.intermediate_size=96", "model.max_seq_len=48", "world.max_level=1", "world.heldout_fraction=0.05",
         "trainer.progress=false", "run.threads=1"]
SFT = ["stages=[sft]", "sft.max_steps=70", "sft.batch_size=64", "sft.num_examples=4000", "sft.long_fraction=0",
       "sft.optim.lr=3e-3", "sft.optim.warmup_steps=5", "trainer.sample_every_n_steps=0"]
RL = ["stages=[rl]", "rl.iterations=16", "rl.prompts_per_iteration=16", "rl.samples_per_prompt=8",
      "rl.max_new_tokens=8", "rl.lr=2e-3", "rl.epochs=2", "rl.checkpoint_every_n_iterations=0"]


def run(overrides, directory):
    cfg = apply_overrides(base(), MODEL + overrides + [f"run.dir={directory}"])
    cfg.run.name = "rl-smoke"
    run_dir = create_run_dir(cfg)
    run_pipeline(cfg, run_dir)
    return run_dir


def reward_curve(run_dir) -> list[float]:
    events = EventAccumulator(str(run_dir / "tb" / "rl"))
    events.Reload()
    return [e.value for e in events.Scalars("reward/reward_mean")]


@pytest.fixture(scope="module")
def rl_overrides(tmp_path_factory):
    root = tmp_path_factory.mktemp("rl-smoke")
    sft_model = run(SFT, root / "sft") / "sft" / "model"
    prompts = root / "always7.jsonl"
    with prompts.open("w") as f:
        for a in range(10):
            for b in range(10 - a):
                f.write(json.dumps({"id": f"{a}+{b}", "prompt": f"{a}+{b}=", "answer": "7", "difficulty": 1, "domain": "arithmetic"}) + "\n")
    return RL + [f"model.init_from={sft_model}", f"rl.prompt_path={prompts}"]


def test_rl_raises_reward(rl_overrides, tmp_path):
    curve = reward_curve(run(rl_overrides, tmp_path / "rl"))
    start, end = sum(curve[:3]) / 3, sum(curve[-3:]) / 3
    print("reward curve", [round(x, 2) for x in curve])
    assert len(curve) == 16
    assert 0.01 < start < 0.5, f"the easy setting should leave room to learn, start={start:.2f}"
    assert end > start + 0.3, f"reward {start:.2f} -> {end:.2f}"


def test_flipped_advantages_do_not_raise_reward(rl_overrides, tmp_path, monkeypatch):
    real = rl_module.advantages
    monkeypatch.setattr(rl_module, "advantages", lambda *a, **k: -real(*a, **k))
    curve = reward_curve(run(rl_overrides, tmp_path / "rl"))
    start, end = sum(curve[:3]) / 3, sum(curve[-3:]) / 3
    print("reward curve", [round(x, 2) for x in curve])
    assert end < start, f"negative control: reward {start:.2f} -> {end:.2f}"
