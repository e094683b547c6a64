"""Partial rollouts (paper §2.6.2): a per-iteration token budget per trajectory and a replay buffer.

Each iteration has a fixed number of trajectory slots (prompts_per_iteration x k). Every slot
generates at most `budget` new tokens. A trajectory that neither stops nor reaches max_new_tokens
within its budget is saved, with its prefix and the iteration of each segment, and continued in
the next iteration (its prompt is then the original prompt plus all its earlier segments). New
prompts fill the slots that are free, k at a time. After `max_continuations` continuations a
still-unfinished trajectory is finalized as truncated (finish reason "length").

That cap must not cut answers short of max_new_tokens: a trajectory can get at most
budget x (max_continuations + 1) tokens, so a budget with budget x (max_continuations + 1) <
max_new_tokens is refused (here and in k15.config.validate). Since the engine fills every segment
up to its limit unless the response stops, under an accepted setting a trajectory reaches
max_new_tokens by its last allowed segment, and the cap is only a guard against continuing forever
(rollout/capped_frac stays 0 unless an engine ends a segment short of its limit).

Groups and the baseline (the paper leaves this open). The baseline of a sample is the mean reward
of its own group of k. If finished members were trained at once and their unfinished siblings
later, each part would be baselined against an incomplete group, and long trajectories (the ones
that need continuing) would be compared with nothing. So a group stays in the buffer, finished
members included, until all k members are done; then the whole group is scored and trained
together, in the iteration its last member finishes. The price: a finished member waits, and its
tokens were sampled by an older policy (logged as staleness). With `rl.partial.loss_on=current`
only tokens generated in the training iteration enter the loss, so a member that finished earlier
still sets the baseline but gets no gradient.

`min_groups` holds finished groups back until that many are ready, so no optimizer step is taken
on a handful of groups (with a fresh Adam per iteration such a step is as large as a full one).

`budget=0` (or a budget >= max_new_tokens) turns the budget and the buffer off: every response is
generated in one go, exactly as without this module (the engine gets the same prompts in the same
order).

Its pieces (effective_budget, segment_limits, settle, partial_stats) are also the asynchronous
loop's (k15.rl.workers.loop), where a segment records the policy version (= iteration) of the worker
that made it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from k15.rollout.buffer import Group, ReplayBuffer, Trajectory
from k15.rollout.engine import RolloutEngine
from k15.rollout.sampling import SamplingParams


@dataclass
class RolloutRound:
    groups: list[Group]  # finished groups to train on now, oldest first
    generated_tokens: int  # new tokens this iteration
    stats: dict[str, float]


def effective_budget(budget: int, max_new_tokens: int, max_continuations: int) -> int:
    """The budget in force: checked (>= 0, and budget x (max_continuations + 1) reaches max_new_tokens);
    0 when it cuts nothing (0, or >= max_new_tokens)."""
    if budget < 0:
        raise ValueError(f"budget must be >= 0 (0: off), got {budget}")
    if 0 < budget * (max_continuations + 1) < max_new_tokens:
        raise ValueError(
            f"budget x (max_continuations + 1) = {budget} x {max_continuations + 1} is below max_new_tokens={max_new_tokens}: "
            "answers would be cut short"
        )
    return budget if budget < max_new_tokens else 0  # a budget that cuts nothing is no budget


def segment_limits(members: list[Trajectory], budget: int, max_new_tokens: int) -> tuple[list[int] | None, list[int] | None]:
    """The engine's `limits` and `history` for the next segment of each member (None, None without a budget):
    at most `budget` new tokens, never past max_new_tokens; its earlier tokens end its prompt (history, for the repeat rule)."""
    if not budget:
        return None, None
    return [min(budget, max_new_tokens - len(m.tokens)) for m in members], [len(m.tokens) for m in members]


def settle(m: Trajectory, version: int, tokens: list[int], logprobs: list[float], reason: str, max_new_tokens: int,
           max_continuations: int) -> str:
    """Append one budgeted segment, made by policy `version` (an iteration), to `m`; returns what became of it:
    "done" (stopped, or reached max_new_tokens), "capped" (unfinished after max_continuations continuations:
    finalized as truncated) or "saved" (out of budget: to be continued)."""
    m.extend(version, tokens, logprobs)
    if reason != "length" or len(m.tokens) >= max_new_tokens:
        m.finish_reason = reason
        return "done"
    if len(m.segments) > max_continuations:
        m.finish_reason = "length"
        return "capped"
    return "saved"


def partial_stats(iteration: int, done: list[Group], slots: int, continued: int, saved: int, capped: int,
                  buffered_trajectories: int, buffered_groups: int) -> dict[str, float]:
    """rollout/* of one iteration under a budget: `slots` trajectories got a segment, `continued` of them continued
    an earlier one, `saved` are to be continued, `capped` were finalized as truncated; `done` are trained now."""
    slots = max(slots, 1)
    stats = {
        "rollout/partial_frac": saved / slots,  # of this iteration's trajectories: saved unfinished
        "rollout/continued_frac": continued / slots,  # ... that continued an earlier one
        "rollout/capped_frac": capped / slots,  # ... finalized as truncated by max_continuations
        "rollout/buffer_trajectories": float(buffered_trajectories),
        "rollout/buffer_groups": float(buffered_groups),
        "rollout/finished_groups": float(len(done)),
    }
    trained = [m for g in done for m in g.members]
    if trained:
        ages = [iteration - m.segments[0][0] for m in trained]  # iterations since its first token
        stats["rollout/segments_mean"] = sum(len(m.segments) for m in trained) / len(trained)
        stats["rollout/staleness_mean"] = sum(ages) / len(ages)
        stats["rollout/staleness_max"] = float(max(ages))
        stale = sum(m.tokens_before(iteration) for m in trained)
        stats["rollout/stale_token_frac"] = stale / max(1, sum(len(m.tokens) for m in trained))
    return stats


class PartialRollouts:
    def __init__(self, group_size: int, groups_per_iteration: int, max_new_tokens: int, budget: int = 0, max_continuations: int = 4,
                 min_groups: int = 0):
        self.k, self.slots = group_size, group_size * groups_per_iteration
        self.max_new_tokens, self.max_continuations = max_new_tokens, max_continuations
        self.budget = effective_budget(budget, max_new_tokens, max_continuations)
        self.buffer = ReplayBuffer()
        self.min_groups = min_groups  # finished groups wait until this many are ready to train on

    def run(
        self,
        iteration: int,
        engine: RolloutEngine,
        draw: Callable[[int], list[int]],
        prompt_of: Callable[[int], list[int]],
        params: SamplingParams,
        generator: torch.Generator | None,
    ) -> RolloutRound:
        """One iteration's rollouts. `draw(n)` picks n new prompt indices; `prompt_of(i)` is prompt i's ids."""
        continuing = self.buffer.unfinished()
        new = [
            Group(f"{iteration}.{slot}", index, [Trajectory() for _ in range(self.k)])
            for slot, index in enumerate(draw((self.slots - len(continuing)) // self.k))
        ]
        work = continuing + [(g, m) for g in new for m in g.members]
        prompts = [prompt_of(g.prompt_index) + m.tokens for g, m in work]
        limits, history = segment_limits([m for _, m in work], self.budget, self.max_new_tokens)
        out = engine.generate(prompts, params, generator, limits=limits, history=history)

        saved = capped = 0
        for (_, m), tokens, logprobs, reason in zip(work, out.tokens, out.logprobs, out.finish_reasons):
            outcome = settle(m, iteration, tokens, logprobs, reason, self.max_new_tokens, self.max_continuations)
            saved += outcome == "saved"  # out of budget: continued next iteration
            capped += outcome == "capped"
        for g in new:
            self.buffer.add(g)
        ready = sum(g.done for g in self.buffer.groups)
        done = self.buffer.pop_done() if ready >= max(self.min_groups, 1) else []
        return RolloutRound(done, sum(len(t) for t in out.tokens), self._stats(iteration, done, len(work), len(continuing), saved, capped))

    def _stats(self, iteration: int, done: list[Group], slots: int, continued: int, saved: int, capped: int) -> dict[str, float]:
        if not self.budget:
            return {}
        return partial_stats(iteration, done, slots, continued, saved, capped, len(self.buffer.unfinished()), len(self.buffer))

    def state_dict(self) -> dict:
        return {"buffer": self.buffer.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.buffer.load_state_dict(state["buffer"])
