"""RL on an easy setting must raise the reward by a margin a broken loss cannot reach.

A tiny model is fine-tuned briefly on one-operation problems (short answers only), so it writes the
answer format with varied digits. The RL prompt set (a user JSONL file, through the same loader)
rewards one answer, "7", on every prompt: a single global behaviour, learnable in a few iterations,
where per-problem facts would take many. The negative control flips the sign of the advantages:
its reward must not rise.
"""

import pytest

import k15.modules.rl as rl_module
from tests.rl.runs import run, scalars, write_always7

RL = ["stages=[rl]", "rl.iterations=16", "rl.prompts_per_iteration=16", "rl.samples_per_prompt=8",
      "rl.max_new_tokens=8", "rl.lr=2e-3", "rl.epochs=2", "rl.checkpoint_every_n_iterations=0"]


def reward_curve(run_dir) -> list[float]:
    curve = scalars(run_dir)["reward/reward_mean"]
    return [curve[step] for step in sorted(curve)]


@pytest.fixture(scope="module")
def rl_overrides(sft_model, tmp_path_factory):
    prompts = write_always7(tmp_path_factory.mktemp("rl-smoke") / "always7.jsonl")
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
