"""The k1.5 length reward: the paper's formula, its edge cases, and how it enters the advantages."""

from __future__ import annotations

import random
from types import SimpleNamespace

import pytest
import torch

from k15.config import RLConfig
from k15.modules.rl import RLModule
from k15.rl.advantages import advantages
from k15.rl.length_penalty import length_reward, length_stats


def reference(lengths: list[int], correct: list[bool], groups: list[int]) -> list[float]:
    """The paper's formula, written out group by group."""
    out = []
    for length, ok, g in zip(lengths, correct, groups):
        members = [l for l, h in zip(lengths, groups) if h == g]
        lo, hi = min(members), max(members)
        lam = 0.0 if hi == lo else 0.5 - (length - lo) / (hi - lo)
        out.append(lam if ok else min(0.0, lam))
    return out


def lr(lengths, correct, groups) -> list[float]:
    return length_reward(torch.tensor(lengths), torch.tensor(correct), torch.tensor(groups)).tolist()


def test_all_equal_lengths_give_zero():
    assert lr([7, 7, 7, 7], [True, False, True, True], [0, 0, 0, 0]) == [0.0] * 4
    assert lr([5], [True], [3]) == [0.0]  # a group of one


def test_shortest_correct_plus_half_longest_correct_minus_half():
    assert lr([10, 20, 30], [True, True, True], [0, 0, 0]) == [0.5, 0.0, -0.5]
    # Wrong answers: never positive, penalised past the midpoint; min/max run over all samples.
    assert lr([10, 20, 30, 25], [False, False, True, False], [0, 0, 0, 0]) == [0.0, 0.0, -0.5, -0.25]
    assert lr([40, 10, 20], [True, False, True], [1, 1, 1]) == [-0.5, 0.0, pytest.approx(1 / 6)]


def test_matches_the_formula_on_interleaved_groups_and_wrong_answers_never_gain():
    rng = random.Random(0)
    n = 300
    lengths = [rng.randrange(1, 12) for _ in range(n)]
    correct = [rng.random() < 0.5 for _ in range(n)]
    groups = [rng.choice([3, 8, 11, 40, 41]) for _ in range(n)]  # sparse ids, samples interleaved
    got = lr(lengths, correct, groups)
    assert got == pytest.approx(reference(lengths, correct, groups), abs=1e-6)
    assert all(v <= 0 for v, ok in zip(got, correct) if not ok)
    assert all(-0.5 <= v <= 0.5 for v in got)


def test_stats_name_what_they_measure():
    lengths, correct, groups = torch.tensor([10, 20, 30, 5, 5]), torch.tensor([True, True, False, True, False]), torch.tensor([0, 0, 0, 1, 1])
    stats = length_stats(length_reward(lengths, correct, groups), lengths, correct, groups, weight=0.2)
    assert stats["rl/length_penalty_weight"] == 0.2
    assert stats["rl/length_equal_group_frac"] == 0.5 and stats["rl/length_range_mean"] == 10.0
    assert stats["rl/length_reward_correct_mean"] == pytest.approx(0.5 / 3)
    assert stats["rl/length_reward_wrong_mean"] == pytest.approx(-0.25)


@pytest.mark.parametrize("in_baseline", [True, False])
def test_shaped_advantages_with_and_without_the_penalty_in_the_baseline(in_baseline):
    cfg = RLConfig()
    cfg.length_penalty.weight, cfg.length_penalty.in_baseline = 0.3, in_baseline
    rewards = torch.tensor([1.0, 1.0, 0.0, 1.0, 0.0, 0.0])
    correct = rewards.bool()
    groups = torch.tensor([0, 0, 0, 1, 1, 1])
    lengths = [10, 20, 30, 8, 4, 4]
    rollout = SimpleNamespace(group_ids=groups, samples=[SimpleNamespace(tokens=[0] * n) for n in lengths])
    bonus = 0.3 * length_reward(torch.tensor(lengths), correct, groups)

    module = SimpleNamespace(cfg=cfg, length_penalty_weight=0.3)
    metrics: dict[str, float] = {}
    got = RLModule.shaped_advantages(module, rollout, rewards, correct, metrics)
    plain = advantages(rewards, groups)
    if in_baseline:  # the mean baseline of r + w*len: the bonus's group mean is subtracted too
        expected = advantages(rewards + bonus, groups)
        assert not torch.allclose(expected, plain + bonus)
    else:
        expected = plain + bonus
    torch.testing.assert_close(got, expected)
    assert metrics["rl/length_penalty_weight"] == 0.3

    module.length_penalty_weight = 0.0  # warm-up: advantages are exactly the plain ones, stats still logged
    metrics = {}
    torch.testing.assert_close(RLModule.shaped_advantages(module, rollout, rewards, correct, metrics), plain)
    assert metrics["rl/length_penalty_weight"] == 0.0 and "rl/length_reward_mean" in metrics
