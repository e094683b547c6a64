"""AsyncRollouts: the trainer's side of asynchronous RL, one iteration's finished groups at a time.

It stands where PartialRollouts.run stands in the synchronous loop (k15.modules.rl) and returns the
same RolloutRound, so scoring, advantages and the loss are the synchronous ones. The policy version
is the iteration: version v is the policy after v iterations of training.

`run(iteration, ...)`, steps:
1. `pool.check()`: a dead or hung worker stops the run here, named in one line (K15Error).
2. Keep `2 x groups_per_iteration` groups outstanding (in flight, waiting for a continuation, or
   finished and not trained yet): the trainer draws prompts from its own sampler (curriculum,
   prioritized) and submits each new group as one request (its k samples), seeded from (run seed,
   iteration, slot, prompt index). One iteration's worth ahead is what keeps a worker busy while
   the trainer trains.
3. Partial rollouts (`rl.partial.budget` below max_new_tokens): a request generates one segment of
   at most `budget` tokens per unfinished member, continuing from its tokens so far (prompt + its
   segments, `history` for the repeat rule), exactly as PartialRollouts does in-process (its
   segment_limits and settle). A group with unfinished members waits in the trainer (`waiting`) and
   is resubmitted, to any worker, as one request of its unfinished members; `max_continuations`
   caps a member as in the synchronous loop. A group counts as finished once all k have finished.
   Without a budget a request is the whole response and every group finishes in one request.
4. Each segment records the version that made it (a worker changes weights only between requests).
   A group's staleness is the current version minus its oldest segment's. Finished groups are taken
   oldest first until `groups_per_iteration` of them are at most `max_staleness` versions old; older
   ones are dropped and counted, and a drop is replaced by a fresh draw (submitted now, so made by
   the current version, continuations included: the loop always ends). A waiting group already too
   stale is dropped before its continuation (its staleness can only grow). RolloutBatch then sees
   stale tokens as tokens of an earlier iteration: `rl.partial.loss_on=current` keeps only the
   current version's segments in the loss, as for synchronous partial rollouts.

5. With partial rollouts, between rounds (while the trainer scores and trains) a collector thread
   takes results as they arrive and resubmits continuations at once (never new draws: the sampler
   stays the trainer's), so a worker is not left idle with unfinished members waiting for the next
   round; the next `run` stops it first, so only one thread at a time touches the groups.

`publish(model, version)` after the iteration's optimizer steps; `close()` stops the workers.
What is in flight or waiting when the run ends or is killed is lost (at most 2 x
groups_per_iteration groups, with the prompts drawn for them: a resume draws the sampler's next
ones, it never replays them); the synchronous replay buffer (PartialRollouts) stays empty.

Log-probs, the same semantics as the synchronous loop: the k1.5 loss's reference log-probs
(`logp_ref`, the "old policy") are recomputed by the trainer with the policy at the start of the
training iteration (RLModule.train_on), never taken from the rollout (the k1.5 loss is built for
off-policy samples). The worker's log-probs, recorded under the version that made the tokens, travel
with each sample; `rl/logp_mismatch` compares them with the reference on current-version tokens
only, as for partial rollouts, so a group made by an older version does not count in it.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from typing import Callable

from k15.config import RLConfig
from k15.rl.workers.messages import RolloutRequest, RolloutResult
from k15.rl.workers.pool import RolloutWorkers
from k15.rollout.buffer import Group, Trajectory
from k15.rollout.partial import RolloutRound, effective_budget, partial_stats, segment_limits, settle
from k15.rollout.sampling import SamplingParams

__all__ = ["AsyncRollouts", "oldest_version", "request_seed", "start_async_rollouts"]


def request_seed(seed: int, iteration: int, slot: int, prompt_index: int, segment: int = 0) -> int:
    """A request's generator seed: the same run, iteration, slot, prompt (and continuation `segment`, of a
    partial rollout) give the same seed on any worker."""
    key = (seed, iteration, slot, prompt_index) + ((segment,) if segment else ())
    return hash(key) & (2**63 - 1)  # hash of ints is not randomized per process


def oldest_version(group: Group) -> int:
    """The version of the group's oldest segment: its staleness is the current version minus this."""
    return min(m.segments[0][0] for m in group.members)


class AsyncRollouts:
    def __init__(self, pool, group_size: int, groups_per_iteration: int, max_staleness: int, seed: int, dropped: int = 0,
                 max_new_tokens: int = 0, budget: int = 0, max_continuations: int = 4, collect_while_training: bool = False):
        """`pool`: a started RolloutWorkers (or anything with its check / submit / get / publish / close);
        `dropped`: the count a resumed run had saved; `budget` (with max_new_tokens, max_continuations): partial
        rollouts, as rl.partial sets them (0: each response in one request); `collect_while_training` (with a
        budget): a thread takes results and resubmits continuations while the trainer trains (step 5)."""
        self.pool, self.k, self.groups = pool, group_size, groups_per_iteration
        self.max_staleness, self.seed = max_staleness, seed
        self.max_new_tokens, self.max_continuations = max_new_tokens, max_continuations
        self.budget = effective_budget(budget, max_new_tokens, max_continuations)  # 0: each response in one request
        self.in_flight: dict[int, tuple[Group, list[Trajectory]]] = {}  # request id -> its group and the members it extends
        self.waiting: list[Group] = []  # arrived with unfinished members: to be continued
        self.finished: list[Group] = []  # every member finished, not trained yet, oldest first
        self.prompts: dict[int, object] = {}  # id(group) -> its prompt, while it may be continued (the collector reads no data)
        self.next_id = 0
        self.dropped = dropped  # groups thrown away as too stale in this run (saved in the RL checkpoint)
        self.ages: list[int] = []  # the last round's staleness per group (k15.rl.workers.staleness's histogram)
        self._busy_s = 0.0  # worker generate() seconds received since the last round
        self._since = time.perf_counter()
        self.counts: Counter[str] = Counter()  # segments since the last round: rows, continued, saved, capped, tokens
        self.collect_while_training = collect_while_training and bool(self.budget)
        self.resubmitted_while_training = 0  # continuations the collector submitted since the last round
        self._collector: threading.Thread | None = None
        self._stop_collecting = threading.Event()
        self._collector_failure: BaseException | None = None

    def run(
        self, iteration: int, draw: Callable[[int], list[int]], prompt_of: Callable[[int], list[int]], params: SamplingParams,
    ) -> RolloutRound:
        """This iteration's `groups_per_iteration` finished groups (see the module's steps)."""
        self._stop_collector()  # raises what the collector met, if anything (a K15Error naming a worker)
        self.pool.check()
        slot, waited = 0, 0.0
        usable: list[Group] = []
        ages: list[int] = []
        while len(usable) < self.groups:
            # 2 x groups outstanding, less what this round took: a drop is replaced at once, a use is not
            want = 2 * self.groups - len(usable) - len(self.in_flight) - len(self.waiting) - len(self.finished)
            for index in draw(want) if want > 0 else []:
                self._submit(Group(f"{iteration}.{slot}", index, [Trajectory() for _ in range(self.k)]), prompt_of, params)
                slot += 1
            self._continue_waiting(iteration, prompt_of, params, drop_stale=True)
            if self.finished:
                group = self.finished.pop(0)
                age = iteration - oldest_version(group)
                if age > self.max_staleness:
                    self.dropped += 1
                else:
                    usable.append(group)
                    ages.append(age)
                continue
            t = time.perf_counter()
            result = self.pool.get()  # raises K15Error, naming the worker, if one dies or hangs
            waited += time.perf_counter() - t
            self._busy_s += result.seconds
            self._arrived(result)
        self.ages = ages
        tokens = self.counts["tokens"]  # before _stats starts the next round's counts
        done = RolloutRound(usable, tokens, self._stats(iteration, usable, ages, waited))
        if self.collect_while_training:
            self._start_collector(iteration + 1, prompt_of, params)
        return done

    def _start_collector(self, version: int, prompt_of: Callable[[int], list[int]], params: SamplingParams) -> None:
        """Step 5: while the trainer trains, a thread takes each result as it arrives and resubmits the unfinished
        members of its group at once, so the workers do not wait for the next round to continue them. It draws
        no prompts (the sampler is the trainer's) and reads none (a group's prompt is kept from its first
        request: no tokenizer or image file is touched beside the training thread), and leaves alone a group that
        will be too stale for `version` (the next round drops it and counts it). The next `run` stops it before
        touching the state."""
        self._stop_collecting.clear()

        def collect() -> None:
            try:
                while not self._stop_collecting.is_set():
                    result = self.pool.get(timeout=0.1)
                    if result is None:
                        continue
                    self._busy_s += result.seconds
                    self._arrived(result)
                    self.resubmitted_while_training += self._continue_waiting(version, prompt_of, params, drop_stale=False)
            except BaseException as failure:  # a dead or hung worker (K15Error), or a bug: the next round raises it
                self._collector_failure = failure

        self._collector = threading.Thread(target=collect, name="k15-async-collector", daemon=True)
        self._collector.start()

    def _stop_collector(self) -> None:
        """Stop the collector thread, if one runs, and raise what it met."""
        if self._collector is not None:
            self._stop_collecting.set()
            self._collector.join()
            self._collector = None
        if self._collector_failure is not None:
            failure, self._collector_failure = self._collector_failure, None
            raise failure

    def _continue_waiting(self, version: int, prompt_of: Callable[[int], list[int]], params: SamplingParams,
                          drop_stale: bool) -> int:
        """Resubmit every waiting group that `version` may still train on; returns how many. One too stale (its
        staleness can only grow) is dropped and counted (`drop_stale`: the round), or left waiting for the round
        that will drop it (the collector)."""
        waiting, self.waiting, submitted = self.waiting, [], 0
        for group in waiting:
            if version - oldest_version(group) <= self.max_staleness:
                self._submit(group, prompt_of, params)
                submitted += 1
            elif drop_stale:
                self.dropped += 1
                self.prompts.pop(id(group), None)
            else:
                self.waiting.append(group)
        return submitted

    def _submit(self, group: Group, prompt_of: Callable[[int], list[int]], params: SamplingParams) -> None:
        """One request for the group's unfinished members (all k of a new group), each continuing from its tokens so far."""
        members = [m for m in group.members if not m.done]
        drawn_in, slot = (int(part) for part in group.id.split("."))  # "<iteration drawn>.<slot>", as PartialRollouts names it
        seed = request_seed(self.seed, drawn_in, slot, group.prompt_index, len(members[0].segments))
        limits, history = segment_limits(members, self.budget, self.max_new_tokens)
        if id(group) not in self.prompts:  # read once, when the group is drawn (the object lives until it leaves)
            self.prompts[id(group)] = prompt_of(group.prompt_index)
        prompt = self.prompts[id(group)]
        request = RolloutRequest(self.next_id, [prompt + m.tokens for m in members], params, seed, limits, history)
        self.in_flight[self.next_id] = (group, members)
        self.next_id += 1
        self.pool.submit(request)

    def _arrived(self, result: RolloutResult) -> None:
        """Extend the request's members by the result's segment, made by `result.version`; file the group as
        finished or waiting."""
        group, members = self.in_flight.pop(result.id)
        for m, tokens, logprobs, reason in zip(members, result.tokens, result.logprobs, result.finish_reasons, strict=True):
            self.counts["rows"] += 1
            self.counts["continued"] += bool(m.segments)
            self.counts["tokens"] += len(tokens)
            if self.budget:
                self.counts[settle(m, result.version, list(tokens), list(logprobs), reason, self.max_new_tokens, self.max_continuations)] += 1
            else:  # the whole response in one request: whatever ended it is its end
                m.extend(result.version, list(tokens), list(logprobs))
                m.finish_reason = reason
        if group.done:
            self.prompts.pop(id(group), None)
            self.finished.append(group)
        else:
            self.waiting.append(group)

    def _stats(self, iteration: int, usable: list[Group], ages: list[int], waited: float) -> dict[str, float]:
        now = time.perf_counter()
        wall = max(now - self._since, 1e-9)  # since the last round: the trainer's own work overlaps the workers'
        stats = {
            "async/staleness_mean": sum(ages) / max(len(ages), 1),
            "async/staleness_max": float(max(ages, default=0)),
            "async/dropped_groups": float(self.dropped),
            "async/worker_busy_frac": self._busy_s / (wall * len(self.pool)),
            "async/trainer_wait_s": waited,
            "async/samples_per_s": sum(len(g.members) for g in usable) / wall,
            "async/in_flight_groups": float(len(self.in_flight)),
        }
        if self.collect_while_training:
            stats["async/resubmitted_while_training"] = float(self.resubmitted_while_training)
        if self.budget:  # the synchronous loop's rollout/* curves; its buffer is what is in flight or waiting here
            held = [g for g, _ in self.in_flight.values()] + self.waiting
            c = self.counts
            stats.update(partial_stats(iteration, usable, c["rows"], c["continued"], c["saved"], c["capped"],
                                       sum(not m.done for g in held for m in g.members), len(held) + len(self.finished)))
        self._busy_s, self._since = 0.0, now
        self.counts, self.resubmitted_while_training = Counter(), 0
        return stats

    def publish(self, model, version: int) -> float:
        """New weights for the workers, as `version`; returns the seconds it took."""
        t = time.perf_counter()
        self.pool.publish(model, version)
        return time.perf_counter() - t

    def close(self) -> None:
        try:
            self._stop_collector()
        except BaseException:  # closing anyway (after a failure, or at the end): what the collector met goes with it
            pass
        finally:
            self.pool.close()


def start_async_rollouts(model, cfg: RLConfig, max_seq_len: int, seed: int, version: int, device: str,
                         dropped: int = 0) -> AsyncRollouts:
    """`rl.async.workers` workers of `model`, its weights published as `version` (the iteration), one group per
    request, partial rollouts as rl.partial sets them; `dropped`: the stale groups a resumed run had already
    counted. `max_seq_len` must leave room for a continued trajectory's prompt (max_seq_len + budget)."""
    a, p = cfg.asynchronous, cfg.partial
    pool = RolloutWorkers(
        a.workers, model, max_batch_size=cfg.samples_per_prompt, max_seq_len=max_seq_len, device=device,
        version=version, heartbeat_timeout_s=a.heartbeat_timeout_s,
    )
    pool.wait_ready()  # the workers' start-up (imports, model, engine) before training, outside rl.max_seconds' clock
    return AsyncRollouts(pool, cfg.samples_per_prompt, cfg.prompts_per_iteration, a.max_staleness, seed, dropped,
                         cfg.max_new_tokens, p.budget, p.max_continuations, collect_while_training=True)
