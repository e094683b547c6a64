"""Partial rollouts: budgeted segments equal one-go generation; the buffer continues, groups wait, state resumes."""

from __future__ import annotations

import io
from dataclasses import asdict

import pytest
import torch

from k15.rollout.engine import RolloutEngine, RolloutOutput
from k15.rollout.partial import PartialRollouts
from k15.rollout.repeat import RepeatRule
from k15.rollout.sampling import SamplingParams
from tests.rollout.test_engine import PROMPTS, make_model, pick_stop_token


def in_segments(engine, prompts, params: SamplingParams, segment: int):
    """Each prompt's response generated `segment` tokens at a time, every segment re-sent as prompt + the tokens
    so far (`history` tells the repeat rule which of them are response), until it stops or has
    params.max_new_tokens: as partial rollouts continue a trajectory. Returns tokens, logprobs, reasons."""
    tokens, logprobs, reasons = [[] for _ in prompts], [[] for _ in prompts], [""] * len(prompts)
    while live := [i for i, r in enumerate(reasons) if r in ("", "length") and len(tokens[i]) < params.max_new_tokens]:
        out = engine.generate([prompts[i] + tokens[i] for i in live], params, limits=[segment] * len(live),
                              history=[len(tokens[i]) for i in live])
        for i, t, lp, r in zip(live, out.tokens, out.logprobs, out.finish_reasons):
            tokens[i], logprobs[i], reasons[i] = tokens[i] + t, logprobs[i] + lp, r
    return tokens, logprobs, reasons


def test_three_budgeted_segments_equal_one_go_greedy():
    model = make_model("qwen2")
    engine = RolloutEngine(model, max_batch_size=4, max_seq_len=64)
    free = engine.generate(PROMPTS, SamplingParams(max_new_tokens=18, temperature=0.0)).tokens
    params = SamplingParams(max_new_tokens=18, temperature=0.0, stop_token_ids=(pick_stop_token(free),))
    one_go = engine.generate(PROMPTS, params)
    assert "stop" in one_go.finish_reasons and "length" in one_go.finish_reasons

    tokens, logprobs, reasons = in_segments(engine, PROMPTS, params, segment=6)  # three make the full 18
    assert tokens == one_go.tokens
    assert reasons == one_go.finish_reasons
    for a, b in zip(logprobs, one_go.logprobs):
        torch.testing.assert_close(torch.tensor(a), torch.tensor(b), atol=1e-4, rtol=0)


def test_buffer_continuation_through_partial_rollouts_equals_one_go():
    model = make_model("llama")
    engine = RolloutEngine(model, max_batch_size=16, max_seq_len=64 + 5)
    free = engine.generate(PROMPTS, SamplingParams(max_new_tokens=15, temperature=0.0)).tokens
    params = SamplingParams(max_new_tokens=15, temperature=0.0, stop_token_ids=(pick_stop_token(free),), repeat=RepeatRule(2, 3))
    one_go = engine.generate(PROMPTS, params)
    assert {"stop", "length", "repeat"} <= set(one_go.finish_reasons)

    rollouts = PartialRollouts(group_size=2, groups_per_iteration=len(PROMPTS), max_new_tokens=15, budget=5, max_continuations=9)
    queue = list(range(len(PROMPTS)))
    draw = lambda n: [queue.pop(0) for _ in range(min(n, len(queue)))]  # noqa: E731
    finished = []
    for iteration in range(4):
        finished += rollouts.run(iteration, engine, draw, lambda i: PROMPTS[i], params, None).groups
    assert not rollouts.buffer.groups and len(finished) == len(PROMPTS)
    assert max(len(m.segments) for g in finished for m in g.members) == 3  # some took three segments
    for group in finished:
        for m in group.members:  # greedy: both members equal the one-go response
            assert m.tokens == one_go.tokens[group.prompt_index]
            assert m.finish_reason == one_go.finish_reasons[group.prompt_index]
            assert [n for _, n in m.segments] == [min(5, len(m.tokens) - 5 * s) for s in range(len(m.segments))]
            assert [it for it, _ in m.segments] == list(range(len(m.segments)))


class ScriptedEngine:
    """Stands in for RolloutEngine. A response's first token encodes its full length L as 100 + L
    (L taken from `lengths` in order of generation); then come 1, 2, ..., and it stops after L tokens."""

    def __init__(self, lengths: list[int]):
        self.lengths = list(lengths)

    def generate(self, prompts, params, generator=None, *, limits=None, history=None) -> RolloutOutput:
        out = RolloutOutput([], [], [])
        for p, limit, h in zip(prompts, limits, history):
            L = self.lengths.pop(0) if h == 0 else p[len(p) - h] - 100
            new = ([100 + L] + list(range(1, L)))[h : h + limit]
            out.tokens.append(new)
            out.logprobs.append([-0.5] * len(new))
            out.finish_reasons.append("stop" if h + len(new) == L else "length")
        return out


def script(L: int) -> list[int]:
    return [100 + L] + list(range(1, L))


def run(rollouts, iteration, engine, drawn):
    def draw(n):
        drawn.append(n)
        return list(range(10 * iteration, 10 * iteration + n))
    return rollouts.run(iteration, engine, draw, lambda i: [1, 2, 3], SamplingParams(max_new_tokens=16), None)


def test_groups_wait_for_all_members_and_new_prompts_fill_free_slots():
    # k=2, 3 groups per iteration (6 slots), budget 4 tokens, at most 2 continuations: 4 x 3 = max_new_tokens.
    rollouts = PartialRollouts(group_size=2, groups_per_iteration=3, max_new_tokens=12, budget=4, max_continuations=2)
    engine = ScriptedEngine([3, 4, 10, 2, 14, 5] + [1, 6] + [2, 2])
    drawn: list[int] = []

    r0 = run(rollouts, 0, engine, drawn)
    assert [g.prompt_index for g in r0.groups] == [0]  # lengths 3 and 4 finish within the budget
    assert r0.stats["rollout/partial_frac"] == 3 / 6 and r0.stats["rollout/buffer_trajectories"] == 3
    waiting = rollouts.buffer.groups[0]
    assert waiting.members[1].finish_reason == "stop" and not waiting.members[0].done  # 2 finished, 10 not

    r1 = run(rollouts, 1, engine, drawn)
    assert r1.groups == []  # every group still has an unfinished member
    assert drawn == [3, 1]  # 3 continuations leave 3 slots: one new group of 2
    assert r1.stats["rollout/continued_frac"] == 3 / 5

    # Checkpoint here; the copy must continue exactly like the original.
    buffer = io.BytesIO()
    torch.save(rollouts.state_dict(), buffer)
    buffer.seek(0)
    copy = PartialRollouts(group_size=2, groups_per_iteration=3, max_new_tokens=12, budget=4, max_continuations=2)
    copy.load_state_dict(torch.load(buffer, weights_only=True))
    r2_copy = run(copy, 2, ScriptedEngine([2, 2]), [])

    r2 = run(rollouts, 2, engine, drawn)
    assert [asdict(g) for g in r2.groups] == [asdict(g) for g in r2_copy.groups]
    assert [g.prompt_index for g in r2.groups] == [1, 2, 10, 20]  # buffered groups first, oldest first
    (g10, g1), (g14, g5), (g_one, g6), _ = [g.members for g in r2.groups]
    assert g10.tokens == script(10) and g10.segments == [(0, 4), (1, 4), (2, 2)] and g10.finish_reason == "stop"
    assert g1.tokens == script(2) and g1.segments == [(0, 2)]  # finished at 0, trained at 2 with its group
    assert g5.segments == [(0, 4), (1, 1)] and g6.segments == [(1, 4), (2, 2)]
    # 14 tokens would need 4 segments; the third brings it to max_new_tokens=12, truncated by length.
    assert g14.tokens == script(14)[:12] and g14.finish_reason == "length" and len(g14.segments) == 3
    assert r2.stats["rollout/capped_frac"] == 0 and r2.stats["rollout/staleness_max"] == 2
    assert not rollouts.buffer.groups and engine.lengths == []


def test_budget_zero_is_one_engine_call_in_prompt_order():
    calls = []

    class Recorder:
        def generate(self, prompts, params, generator=None, *, limits=None, history=None):
            calls.append((prompts, limits, history))
            return RolloutOutput([[5]] * len(prompts), [[-1.0]] * len(prompts), ["stop"] * len(prompts))

    rollouts = PartialRollouts(group_size=3, groups_per_iteration=2, max_new_tokens=8)
    done = rollouts.run(0, Recorder(), lambda n: [4, 9][:n], lambda i: [i], SamplingParams(max_new_tokens=8), None)
    assert calls == [([[4], [4], [4], [9], [9], [9]], None, None)]
    assert [g.id for g in done.groups] == ["0.0", "0.1"] and done.stats == {}


def test_min_groups_holds_finished_groups_back_until_enough_are_ready():
    # k=2, 3 groups per iteration, budget 4: groups whose members are short finish at once, long ones later.
    rollouts = PartialRollouts(group_size=2, groups_per_iteration=3, max_new_tokens=16, budget=4, max_continuations=4,
                               min_groups=2)
    engine = ScriptedEngine([3, 4] + [10, 2] + [14, 5] + [1, 1] * 20)
    drawn: list[int] = []
    seen = []
    for iteration in range(6):
        done = run(rollouts, iteration, engine, drawn).groups
        assert done == [] or len(done) >= 2  # never a step on a single group
        seen += [g.prompt_index for g in done]
    assert seen[0] == 0 and len(seen) == len(set(seen))  # the first finished group waited, none is lost or repeated
    held = [g for g in rollouts.buffer.groups if g.done]
    assert len(held) < 2  # what is left waiting is below the threshold


def test_continuations_always_reach_max_new_tokens():
    # budget x (max_continuations + 1) below max_new_tokens would cut answers short: refused.
    with pytest.raises(ValueError, match=r"5 x 3 is below max_new_tokens=16"):
        PartialRollouts(group_size=2, groups_per_iteration=1, max_new_tokens=16, budget=5, max_continuations=2)
    # At 5 x 4 >= 16, a response longer than max_new_tokens gets all 16 tokens (5 + 5 + 5 + 1), and the
    # continuation cap never fires.
    rollouts = PartialRollouts(group_size=2, groups_per_iteration=1, max_new_tokens=16, budget=5, max_continuations=3)
    engine = ScriptedEngine([30, 30])
    rounds = [run(rollouts, iteration, engine, []) for iteration in range(4)]
    assert [len(r.groups) for r in rounds] == [0, 0, 0, 1]
    assert all(r.stats["rollout/capped_frac"] == 0 for r in rounds)
    for m in rounds[-1].groups[0].members:
        assert m.tokens == script(30)[:16] and m.finish_reason == "length"
        assert [n for _, n in m.segments] == [5, 5, 5, 1]
