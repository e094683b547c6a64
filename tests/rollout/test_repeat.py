"""Repeat detection: the n-gram rule on planted loops, its batched form, and the engine's early stop."""

from __future__ import annotations

import random

import pytest
import torch

from k15.rollout.engine import RolloutEngine
from k15.rollout.repeat import NO_TOKEN, RepeatRule, newest_ngram_counts
from k15.rollout.sampling import SamplingParams
from tests.rollout.test_engine import PROMPTS, make_model


def first_stop(rule: RepeatRule, tokens: list[int]) -> int | None:
    """Reference: the length of the shortest prefix the rule stops, or None."""
    return next((i for i in range(1, len(tokens) + 1) if rule.stops(tokens[:i])), None)


def test_planted_loop_stops_when_the_threshold_is_reached():
    rule = RepeatRule(ngram=3, threshold=3)
    text = [1, 2, 3, 4, 5, 7, 8, 9, 7, 8, 9, 7, 8, 9, 7]
    # "7 8 9" completes its 3rd occurrence at index 13: stop with 14 tokens, not earlier.
    assert first_stop(rule, text) == 14
    assert rule.count_newest(text[:8]) == 1 and rule.count_newest(text[:11]) == 2 and rule.count_newest(text[:14]) == 3
    # Overlapping occurrences count: a run of one token is a loop too.
    assert first_stop(RepeatRule(ngram=2, threshold=4), [5, 6, 1, 1, 1, 1, 1]) == 7
    # Repeats spread through varied text below the threshold, or shorter than n: no stop.
    assert first_stop(RepeatRule(ngram=3, threshold=3), [1, 2, 3, 9, 1, 2, 3, 8, 4, 5, 6]) is None
    assert first_stop(RepeatRule(ngram=4, threshold=2), list(range(20))) is None
    with pytest.raises(ValueError):
        RepeatRule(ngram=2, threshold=1)


def test_batched_counts_equal_the_reference_with_left_padding():
    rng = random.Random(0)
    rows = [[rng.randrange(3) for _ in range(rng.randrange(1, 12))] for _ in range(200)]  # the engine asks after >= 1 token
    width = max(len(r) for r in rows)
    batch = torch.full((len(rows), width), NO_TOKEN, dtype=torch.long)
    for i, r in enumerate(rows):
        if r:
            batch[i, width - len(r) :] = torch.tensor(r)
    for n in (1, 2, 3):
        rule = RepeatRule(n, 2)
        expected = [rule.count_newest(r) if len(r) >= n else 0 for r in rows]
        got = newest_ngram_counts(batch, n).tolist()
        # A row shorter than n reads padding in its newest window: it matches only itself.
        assert [g if len(r) >= n else 0 for g, r in zip(got, rows)] == expected
        assert all(g <= 1 for g, r in zip(got, rows) if len(r) < n)


def test_engine_stops_where_the_rule_says_and_counts_earlier_segments():
    model = make_model("llama")
    engine = RolloutEngine(model, max_batch_size=3, max_seq_len=64)
    free = engine.generate(PROMPTS, SamplingParams(max_new_tokens=30, temperature=0.0)).tokens
    rule = RepeatRule(ngram=2, threshold=3)
    stops = [first_stop(rule, t) for t in free]
    assert any(s is None for s in stops) and sum(s is not None for s in stops) >= 2, stops  # both cases covered

    out = engine.generate(PROMPTS, SamplingParams(max_new_tokens=30, temperature=0.0, repeat=rule))
    for tokens, reason, full, stop in zip(out.tokens, out.finish_reasons, free, stops):
        assert tokens == full[: stop or 30]
        assert reason == ("repeat" if stop else "length")

    # A continued response (partial rollouts): its first 6 tokens are in the prompt, declared as
    # history. It must stop where the one-go response stops; without the history the earlier
    # occurrences are not counted and some rows run longer.
    rule, cut = RepeatRule(ngram=1, threshold=4), 6
    stops = [first_stop(rule, t) for t in free]
    rows = [i for i, s in enumerate(stops) if s and s > cut]
    assert len(rows) >= 2, stops
    prompts = [PROMPTS[i] + free[i][:cut] for i in rows]
    params = SamplingParams(max_new_tokens=30 - cut, temperature=0.0, repeat=rule)
    cont = engine.generate(prompts, params, history=[cut] * len(rows))
    assert [free[i][:cut] + t for i, t in zip(rows, cont.tokens)] == [free[i][: stops[i]] for i in rows]
    assert set(cont.finish_reasons) == {"repeat"}
    blind = engine.generate(prompts, params)
    assert any(len(b) > len(c) for b, c in zip(blind.tokens, cont.tokens))
