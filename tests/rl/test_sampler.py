"""Prompt samplers: the uniform pass, curriculum and prioritized draws (statistical tests), state round trips."""

import io

import pytest
import torch

from k15.config import SamplingConfig
from k15.data.prompts import PromptRecord
from k15.errors import ConfigError
from k15.rl.sampler import SEED_OFFSET, UniformSampler, WeightedSampler, inclusion_probabilities, make_sampler
from k15.rl.success import SuccessTracker


def test_each_pass_covers_every_prompt_once():
    sampler = UniformSampler(10, seed=0)
    first, second = sampler.draw(10), sampler.draw(10)
    assert sorted(first) == sorted(second) == list(range(10)) and first != second


def test_state_round_trip_continues_identically():
    a = UniformSampler(17, seed=3)
    a.draw(5)
    state = a.state_dict()
    b = UniformSampler(17, seed=99)
    b.load_state_dict(state)
    assert [a.draw(7) for _ in range(5)] == [b.draw(7) for _ in range(5)]


# ------------------------------------------------------------------------------------------------
# Curriculum and prioritized sampling

# Chi-square critical values at p = 0.001 by degrees of freedom (a correct sampler fails 1 in 1000).
CHI2_CRITICAL = {2: 13.816, 3: 16.266, 4: 18.467}


def records(difficulties, pass_rates=None):
    pass_rates = pass_rates or [None] * len(difficulties)
    return [PromptRecord(f"p{i}", f"{i}", "0", d, "arithmetic", pass_rate=s) for i, (d, s) in enumerate(zip(difficulties, pass_rates))]


def chi2(counts: torch.Tensor, probs: torch.Tensor) -> float:
    expected = probs * counts.sum()
    return float(((counts - expected) ** 2 / expected).sum())


def first_pick_counts(sampler, n_prompts: int, draws: int, iteration: int = 0) -> torch.Tensor:
    picks = [sampler.draw(1, iteration)[0] for _ in range(draws)]
    return torch.bincount(torch.tensor(picks), minlength=n_prompts).double()


def test_prioritized_draws_follow_one_minus_success_plus_floor():
    # Success rates 0, .25, .5, .75, 1 from the curation pass rates; floor 0.05.
    cfg = SamplingConfig(prioritized=True, floor=0.05)
    sampler = make_sampler(records([1] * 5, [0.0, 0.25, 0.5, 0.75, 1.0]), cfg, per_draw=1, seed=0)
    counts = first_pick_counts(sampler, 5, 8000)
    weights = torch.tensor([1.05, 0.80, 0.55, 0.30, 0.05], dtype=torch.float64)
    assert chi2(counts, weights / weights.sum()) < CHI2_CRITICAL[4], counts
    # The test has power: the same counts reject uniform sampling, and the solved prompt (s = 1)
    # is still drawn thanks to the floor.
    assert chi2(counts, torch.full((5,), 0.2, dtype=torch.float64)) > CHI2_CRITICAL[4]
    assert counts[4] > 0


def inclusion_counts(draw, n_prompts: int, draws: int) -> torch.Tensor:
    counts = torch.zeros(n_prompts, dtype=torch.float64)
    for _ in range(draws):
        drawn = draw()
        assert len(set(drawn)) == len(drawn)
        counts[drawn] += 1
    return counts


def test_prioritized_inclusion_frequencies_follow_the_weights():
    # 128 prompts, 64 unsolved (weight 1.05) and 64 nearly solved (s = .945: weight .105), a 10:1
    # ratio; 32 drawn per iteration. Each prompt's share of draws must be pi_i = 32 w_i / sum(w).
    n, draws = 32, 3000
    data = records([1] * 128, [0.0] * 64 + [0.945] * 64)
    sampler = make_sampler(data, SamplingConfig(prioritized=True, floor=0.05), per_draw=n, seed=0)
    weights = torch.tensor([1.05] * 64 + [0.105] * 64, dtype=torch.float64)
    pi = n * weights / weights.sum()  # .455 and .045: none above 1, so no cap

    def follows_weights(counts: torch.Tensor) -> bool:
        # Each count is Binomial(draws, pi_i): the sum of squared z-scores is about chi-square with
        # ~127 degrees of freedom (mean 128, 99.9% quantile 182; measured over 20 seeds: 93-173).
        # Tolerance: below 200, and the mean inclusion ratio of the two halves within 10 +- 0.5
        # (its standard error here is ~0.09).
        z2 = (counts - draws * pi) ** 2 / (draws * pi * (1 - pi))
        ratio = counts[:64].mean() / counts[64:].mean()
        return float(z2.sum()) < 200 and abs(float(ratio) - 10) < 0.5

    assert follows_weights(inclusion_counts(lambda: sampler.draw(n), 128, draws))
    # The test has power: drawing one prompt after another in proportion to the weights left (the
    # former scheme) includes the two halves at a ratio of ~7.8 and fails it.
    generator = torch.Generator().manual_seed(0)
    sequential = inclusion_counts(lambda: torch.multinomial(weights, n, generator=generator).tolist(), 128, draws)
    assert not follows_weights(sequential)


def test_a_prompt_whose_weight_needs_more_than_certainty_is_drawn_every_time():
    # 4 prompts of weight 10 among 124 of weight 1, 32 drawn: 32 * 10 / 164 > 1. They get inclusion 1,
    # and the other 28 slots are shared evenly by the rest.
    weights = torch.tensor([10.0] * 4 + [1.0] * 124, dtype=torch.float64)
    pi = inclusion_probabilities(weights, torch.ones(128, dtype=torch.bool), 32)
    assert pi[:4].tolist() == [1.0] * 4 and torch.allclose(pi[4:], torch.full((124,), 28 / 124, dtype=torch.float64))
    data = records([1] * 128, [0.0] * 4 + [0.9] * 124)  # weights 1 and .1 with floor 0
    sampler = make_sampler(data, SamplingConfig(prioritized=True, floor=0.0), per_draw=32, seed=4)
    for _ in range(50):
        assert {0, 1, 2, 3} <= set(sampler.draw(32))
    assert sampler.stats()["sampler/certain_frac"] == 4 / 128


def test_floor_zero_draws_solved_prompts_only_to_fill_slots():
    # Floor 0 is the paper's P(i) ∝ 1 - s_i: a solved prompt (s = 1) has weight 0.
    cfg = SamplingConfig(prioritized=True, floor=0.0)
    sampler = make_sampler(records([1] * 10, [1.0] * 4 + [0.5] * 6), cfg, per_draw=6, seed=0)
    for _ in range(50):  # 6 unsolved prompts fill 4 slots: no solved prompt is drawn
        assert min(sampler.draw(4)) >= 4
    assert sampler.stats()["sampler/solved_fill_frac"] == 0.0
    for _ in range(50):  # 6 slots: all 6 unsolved, nothing else
        assert sorted(sampler.draw(6)) == [4, 5, 6, 7, 8, 9]

    # Fewer unsolved prompts than slots: every unsolved one, the rest evenly among the solved ones.
    sampler = make_sampler(records([1] * 10, [1.0] * 8 + [0.5] * 2), cfg, per_draw=4, seed=0)
    counts = inclusion_counts(lambda: sampler.draw(4), 10, 2000)
    assert counts[8:].tolist() == [2000, 2000] and chi2(counts[:8], torch.full((8,), 1 / 8, dtype=torch.float64)) < 24.32  # p=.001, 7 df
    assert sampler.stats()["sampler/solved_fill_frac"] == 0.5

    # Every drawable prompt solved: uniform over the curriculum's drawable prompts (hard ones here).
    cfg = SamplingConfig(curriculum="paper", hard_from_iteration=0, hard_min_difficulty=2, prioritized=True, floor=0.0)
    sampler = make_sampler(records([1] * 4 + [2] * 6, [1.0] * 10), cfg, per_draw=3, seed=0)
    counts = inclusion_counts(lambda: sampler.draw(3, iteration=1), 10, 2000)
    assert counts[:4].sum() == 0 and chi2(counts[4:], torch.full((6,), 1 / 6, dtype=torch.float64)) < 20.52  # 5 df
    stats = sampler.stats()
    assert stats["sampler/solved_fill_frac"] == 1.0 and stats["sampler/weight_min"] == stats["sampler/weight_max"] == 1.0
    assert stats["sampler/effective_frac"] == pytest.approx(1.0)


def test_curriculum_without_priority_draws_as_before():
    # Equal weights: one-after-another drawing is exact, and kept, so curriculum-only runs draw the same prompts.
    cfg = SamplingConfig(curriculum="paper", hard_from_iteration=2, hard_min_difficulty=2)
    sampler = make_sampler(records([1, 2, 2, 2, 3, 3, 1, 2]), cfg, per_draw=3, seed=5)
    generator = torch.Generator().manual_seed(5 + SEED_OFFSET)
    for it in range(6):
        mask = torch.tensor([it < 2 or d >= 2 for d in [1, 2, 2, 2, 3, 3, 1, 2]], dtype=torch.float64)
        assert sampler.draw(3, it) == torch.multinomial(mask / mask.sum(), 3, generator=generator).tolist()


def test_a_draw_holds_distinct_prompts():
    sampler = make_sampler(records([1] * 6, [0.9] * 5 + [0.0]), SamplingConfig(prioritized=True), per_draw=6, seed=1)
    for _ in range(50):
        assert sorted(sampler.draw(6)) == list(range(6))


def test_paper_curriculum_then_hard_only_composed_with_priority():
    difficulty = [1, 1, 2, 2, 3, 3, 3, 3]
    pass_rate = [0.5, 0.5, 0.5, 0.5, 0.0, 0.5, 0.9, None]  # None: initial_success 0.5
    cfg = SamplingConfig(curriculum="paper", hard_from_iteration=5, hard_min_difficulty=3, prioritized=True, floor=0.1)
    sampler = make_sampler(records(difficulty, pass_rate), cfg, per_draw=2, seed=2)

    before = first_pick_counts(sampler, 8, 4000, iteration=4)
    assert (before[:4] > 0).all()  # warm-up: the whole set
    assert sampler.stats()["sampler/curriculum_phase"] == 0.0 and sampler.stats()["sampler/eligible_frac"] == 1.0

    after = first_pick_counts(sampler, 8, 6000, iteration=5)
    assert after[:4].sum() == 0  # hard only
    weights = torch.tensor([1.1, 0.6, 0.2, 0.6], dtype=torch.float64)  # (1 - s) + floor among the hard ones
    assert chi2(after[4:], weights / weights.sum()) < CHI2_CRITICAL[3], after
    assert chi2(after[4:], torch.full((4,), 0.25, dtype=torch.float64)) > CHI2_CRITICAL[3]
    stats = sampler.stats()
    assert stats["sampler/curriculum_phase"] == 1.0 and stats["sampler/eligible_frac"] == 0.5

    with pytest.raises(ConfigError, match="hard_min_difficulty=3: only 4 prompts"):
        make_sampler(records(difficulty), cfg, per_draw=5, seed=0)
    # Without a threshold, "hard" is the upper half of the labels (at or above the median).
    cfg.hard_min_difficulty = None
    median = make_sampler(records([1, 1, 1, 2, 2, 3, 3, 4]), cfg, per_draw=2, seed=0)
    assert {i for _ in range(200) for i in median.draw(2, iteration=5)} == {3, 4, 5, 6, 7}


def test_gradual_curriculum_opens_harder_levels_in_order():
    difficulty = [level for level in (1, 2, 3, 4) for _ in range(25)]
    cfg = SamplingConfig(curriculum="gradual", gradual_start=0.25, gradual_iterations=10)
    sampler = make_sampler(records(difficulty), cfg, per_draw=4, seed=3)
    levels = torch.tensor(difficulty)
    for iteration, top in [(0, 1), (2, 2), (5, 3), (9, 4), (30, 4)]:
        drawn = [i for _ in range(100) for i in sampler.draw(4, iteration)]
        assert int(levels[drawn].max()) == top, (iteration, top)
        assert sampler.stats()["sampler/curriculum_max_difficulty"] == top
    assert sampler.stats()["sampler/curriculum_phase"] == 1.0
    # Uniform within the drawable set: each level about a quarter at the end.
    counts = torch.bincount(levels[[i for _ in range(1000) for i in sampler.draw(4, 30)]], minlength=5)[1:].double()
    assert chi2(counts, torch.full((4,), 0.25, dtype=torch.float64)) < CHI2_CRITICAL[3]


def test_success_tracking_ema_and_counts():
    ema = SuccessTracker([None, 0.2], default=0.5, mode="ema", decay=0.5)
    ema.update([0, 0, 1], [1.0, 0.0, 1.0])
    assert ema.rates.tolist() == [0.375, 0.6] and ema.counts.tolist() == [2, 1]  # 0.5 -> .75 -> .375
    counts = SuccessTracker([0.5], default=0.0, mode="counts")
    counts.update([0, 0, 0], [1.0, 0.0, 1.0])
    assert counts.rates.tolist() == pytest.approx([(0.5 + 1 + 0 + 1) / 4])  # the initial value is one observation


def test_weighted_sampler_state_round_trip_continues_identically():
    cfg = SamplingConfig(curriculum="paper", hard_from_iteration=2, hard_min_difficulty=2, prioritized=True)
    data = records([1, 2, 2, 2, 3, 3, 1, 2], [0.1, 0.2, None, 0.9, 0.5, None, 0.3, 0.7])

    def step(sampler, iteration):
        drawn = sampler.draw(3, iteration)
        sampler.update(drawn, [(i % 3) / 3 for i in drawn])
        return drawn, sampler.stats()

    a = make_sampler(data, cfg, per_draw=3, seed=5)
    for it in range(3):
        step(a, it)
    buffer = io.BytesIO()
    torch.save(a.state_dict(), buffer)  # as in a checkpoint
    buffer.seek(0)
    b = make_sampler(data, cfg, per_draw=3, seed=999)
    assert isinstance(b, WeightedSampler)
    b.load_state_dict(torch.load(buffer, weights_only=False))
    assert [step(a, it) for it in range(3, 9)] == [step(b, it) for it in range(3, 9)]
    assert torch.equal(a.tracker.rates, b.tracker.rates)


def test_defaults_keep_the_uniform_pass():
    assert isinstance(make_sampler(records([1] * 4), SamplingConfig(), per_draw=2, seed=0), UniformSampler)
