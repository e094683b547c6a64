"""The k1.5 recipe with all four pieces on (curriculum + prioritized sampling, length penalty, partial
rollouts, repeat detection), in a short real RL run, and its exact resume from a checkpoint.

The task is test_rl_smoke.py's (answer "7" to every prompt), with difficulty labels and some
curation pass rates so that the sampler has something to work with. A response is 3 tokens
(`<answer>7</answer>`), so a budget of 2 tokens splits most of them over two iterations.
"""

import pytest
import torch
from safetensors.torch import load_file

from k15.callbacks.checkpoint import IterationCheckpoint
from k15.config import load_yaml
from k15.pipeline import run_pipeline
from tests.rl.runs import events, run, scalars, write_always7

RECIPE = [
    "stages=[rl]", "rl.prompts_per_iteration=16", "rl.samples_per_prompt=8", "rl.max_new_tokens=8",
    "rl.lr=1e-3", "rl.epochs=2", "rl.sample_every_n_iterations=0",
    "rl.sampling.curriculum=paper", "rl.sampling.hard_from_iteration=4", "rl.sampling.hard_min_difficulty=3",
    "rl.sampling.prioritized=true", "rl.sampling.histogram_every_n_iterations=5",
    "rl.length_penalty.weight=0.2", "rl.length_penalty.warmup_iterations=3",
    "rl.partial.budget=2", "rl.partial.max_continuations=3",  # 2 x (3 + 1) = rl.max_new_tokens
    "rl.repeat.ngram=1", "rl.repeat.threshold=3", "rl.repeat.penalty=0.5",
]


@pytest.fixture(scope="module")
def recipe(sft_model, tmp_path_factory):
    prompts = write_always7(
        tmp_path_factory.mktemp("recipe") / "always7.jsonl",
        difficulty=lambda a, b: 1 + (a + b) % 3,  # 18 prompts of difficulty 3 (the "hard" ones)
        pass_rate=lambda a, b: 0.9 if a < 3 else None,
    )
    return RECIPE + [f"model.init_from={sft_model}", f"rl.prompt_path={prompts}"]


def by_iteration(curve: dict[int, float]) -> dict[int, float]:
    return {step - 1: value for step, value in curve.items()}  # metrics are logged at step iteration + 1


def test_recipe_run_uses_all_four_pieces(recipe, tmp_path):
    run_dir = run(recipe + ["rl.iterations=12", "rl.checkpoint_every_n_iterations=0"], tmp_path / "rl")
    s = {tag: by_iteration(curve) for tag, curve in scalars(run_dir).items()}

    # Curriculum: the whole set, then hard prompts only from iteration 4; priority weights vary.
    assert all(v == float(it >= 4) for it, v in s["sampler/curriculum_phase"].items()) and len(s["sampler/curriculum_phase"]) == 12
    hard = [v for it, v in s["sampler/drawn_difficulty_mean"].items() if it >= 4]
    assert hard and all(v == 3.0 for v in hard)
    assert min(v for it, v in s["sampler/drawn_difficulty_mean"].items() if it < 4) < 3.0
    assert max(s["sampler/weight_max"].values()) > 1.0 and 0 < max(s["sampler/seen_frac"].values()) <= 1
    assert {"sampler/success_rate", "sampler/weights"} <= set(events(run_dir).Tags()["histograms"])

    # Length penalty: logged with weight 0 during the warm-up, the configured weight after it.
    weights = s["rl/length_penalty_weight"]
    assert weights and all(w == pytest.approx(0.2 if it >= 3 else 0.0) for it, w in weights.items())
    assert any(it >= 3 for it in weights) and any(it < 3 for it in weights)

    # Partial rollouts: most trajectories need two iterations; groups wait in the buffer.
    assert max(s["rollout/partial_frac"].values()) > 0.5
    assert max(s["rollout/segments_mean"].values()) > 1.5
    assert max(s["rollout/staleness_max"].values()) >= 1
    assert max(s["rollout/buffer_groups"].values()) >= 1 and "rollout/continued_frac" in s

    # Repeat detection is on and its share logged (the policy rarely loops, so it is usually 0).
    assert "rollout/repeat_frac" in s

    # It trains: most iterations finish whole groups and take optimizer steps on them. (Whether the
    # recipe learns is not asked here: on this one-answer task prioritized sampling turns away from
    # the prompts that earn the reward. experiments/recipe.py measures it on the synthetic world.)
    losses = s["rl/loss"]
    assert len(losses) >= 9 and all(abs(v) < 1e3 for v in losses.values())
    assert all(-0.5 <= r <= 1.0 for r in s["reward/reward_mean"].values())


class Interrupted(Exception):
    pass


def test_recipe_resumes_exactly(recipe, tmp_path, monkeypatch):
    overrides = recipe + ["rl.iterations=6", "rl.checkpoint_every_n_iterations=3"]
    whole = run(overrides, tmp_path / "whole")

    save = IterationCheckpoint.on_train_batch_end

    def crash_after_first_checkpoint(self, trainer, pl_module, *args):
        save(self, trainer, pl_module, *args)
        if pl_module.iteration == 3:  # the buffer, success rates and RNGs are mid-flight here
            raise Interrupted

    monkeypatch.setattr(IterationCheckpoint, "on_train_batch_end", crash_after_first_checkpoint)
    with pytest.raises(Interrupted):
        run(overrides, tmp_path / "cut")
    monkeypatch.undo()
    cut = tmp_path / "cut"
    state = torch.load(cut / "rl" / "checkpoints" / "last.ckpt", weights_only=False)["k15_rl"]
    assert state["iteration"] == 3 and state["rollouts"]["buffer"]["groups"], "resume from a non-empty buffer"
    run_pipeline(load_yaml(cut / "config.yaml"), cut, resume=True)

    a, b = scalars(whole), scalars(cut)
    compared = [tag for tag in a if not tag.startswith("perf/") and tag != "rollout/tokens_per_s"]
    for tag in compared:
        assert a[tag] == b[tag], tag
    assert any(step > 4 for step in a["reward/reward_mean"])
    # the training clock goes on from the checkpoint's: it never runs backwards across the resume
    elapsed = b["perf/elapsed_s"]
    assert elapsed[4] > state["elapsed_s"] >= elapsed[3] > 0 and all(elapsed[i] < elapsed[i + 1] for i in range(1, 6))
    wa, wb = load_file(whole / "rl" / "model" / "model.safetensors"), load_file(cut / "rl" / "model" / "model.safetensors")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_max_seconds_ends_rl_on_time_with_an_export(recipe, tmp_path):
    run_dir = run(recipe + ["rl.iterations=100000", "rl.max_seconds=4", "rl.checkpoint_every_n_iterations=0"],
                  tmp_path / "timed")
    elapsed = by_iteration(scalars(run_dir)["perf/elapsed_s"])
    last = max(elapsed)
    assert 0 < last < 100000 - 1  # stopped by the clock, not by the iteration count
    # the first iteration end past 4 s (the Timer looks just after the step's own clock, a little later)
    assert elapsed[last] > 3.0 and elapsed[last - 1] < 4.0
    assert sorted(elapsed) == list(range(last + 1)) and all(elapsed[i] < elapsed[i + 1] for i in range(last))
    assert (run_dir / "rl" / "model" / "model.safetensors").is_file()
    assert (run_dir / "rl" / "checkpoints" / "last.ckpt").is_file()
