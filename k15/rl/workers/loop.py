"""AsyncRollouts: the trainer's side of asynchronous RL, one iteration's finished groups at a time.

It stands where PartialRollouts.run stands in the synchronous loop (k15.modules.rl) and returns the
same RolloutRound, so scoring, advantages and the loss are the synchronous ones. The policy version
is the iteration: version v is the policy after v iterations of training.

`run(iteration, ...)`, steps:
1. `pool.check()`: a dead or hung worker stops the run here, named in one line (K15Error).
2. Keep `2 x groups_per_iteration` groups in flight: the trainer draws prompts from its own sampler
   (curriculum, prioritized) and submits each group as one request (its k samples), seeded from
   (run seed, iteration, slot, prompt index). One iteration's worth ahead is what keeps a worker
   busy while the trainer trains.
3. Collect finished groups, oldest first, until `groups_per_iteration` of them were made by a policy
   at most `max_staleness` versions old; older ones are dropped and counted, and a drop is replaced
   by a fresh draw (submitted now, so made by the current version: the loop always ends).
4. Each group's trajectories record the version that made them as their one segment, so
   RolloutBatch sees stale tokens as tokens of an earlier iteration (`rl.partial.loss_on=current`
   then gives them no gradient, as for partial rollouts).

`publish(model, version)` after the iteration's optimizer steps; `close()` stops the workers.
What is in flight when the run ends or is killed is lost (at most 2 x groups_per_iteration groups,
with the prompts drawn for them: a resume draws the sampler's next ones, it never replays them).

Log-probs, the same semantics as the synchronous loop: the k1.5 loss's reference log-probs
(`logp_ref`, the "old policy") are recomputed by the trainer with the policy at the start of the
training iteration (RLModule.train_on), never taken from the rollout (the k1.5 loss is built for
off-policy samples). The worker's log-probs, recorded under the version that made the tokens, travel
with each sample; `rl/logp_mismatch` compares them with the reference on current-version tokens
only, as for partial rollouts, so a group made by an older version does not count in it.
"""

from __future__ import annotations

import time
from typing import Callable

from k15.config import RLConfig
from k15.rl.workers.messages import RolloutRequest, RolloutResult
from k15.rl.workers.pool import RolloutWorkers
from k15.rollout.buffer import Group, Trajectory
from k15.rollout.partial import RolloutRound
from k15.rollout.sampling import SamplingParams

__all__ = ["AsyncRollouts", "request_seed", "start_async_rollouts"]


def request_seed(seed: int, iteration: int, slot: int, prompt_index: int) -> int:
    """A request's generator seed: the same run, iteration, slot and prompt give the same seed on any worker."""
    return hash((seed, iteration, slot, prompt_index)) & (2**63 - 1)  # hash of ints is not randomized per process


class AsyncRollouts:
    def __init__(self, pool, group_size: int, groups_per_iteration: int, max_staleness: int, seed: int, dropped: int = 0):
        """`pool`: a started RolloutWorkers (or anything with its check / submit / get / publish / close);
        `dropped`: the count a resumed run had saved."""
        self.pool, self.k, self.groups = pool, group_size, groups_per_iteration
        self.max_staleness, self.seed = max_staleness, seed
        self.in_flight: dict[int, tuple[str, int]] = {}  # request id -> (group id, prompt index)
        self.finished: list[tuple[RolloutResult, str, int]] = []  # arrived, not trained yet, oldest first
        self.next_id = 0
        self.dropped = dropped  # groups thrown away as too stale in this run (saved in the RL checkpoint)
        self.ages: list[int] = []  # the last round's staleness per group (k15.rl.workers.staleness's histogram)
        self._busy_s = 0.0  # worker generate() seconds received since the last round
        self._since = time.perf_counter()

    def run(
        self, iteration: int, draw: Callable[[int], list[int]], prompt_of: Callable[[int], list[int]], params: SamplingParams,
    ) -> RolloutRound:
        """This iteration's `groups_per_iteration` finished groups (see the module's steps)."""
        self.pool.check()
        slot, waited = 0, 0.0
        usable: list[Group] = []
        ages: list[int] = []
        while len(usable) < self.groups:
            # 2 x groups outstanding, less what this round took: a drop is replaced at once, a use is not
            want = 2 * self.groups - len(usable) - len(self.in_flight) - len(self.finished)
            for index in draw(want) if want > 0 else []:
                self._submit(iteration, slot, index, prompt_of(index), params)
                slot += 1
            if self.finished:
                result, group_id, index = self.finished.pop(0)
                if iteration - result.version > self.max_staleness:
                    self.dropped += 1
                else:
                    usable.append(self._group(result, group_id, index))
                    ages.append(iteration - result.version)
                continue
            t = time.perf_counter()
            result = self.pool.get()  # raises K15Error, naming the worker, if one dies or hangs
            waited += time.perf_counter() - t
            group_id, index = self.in_flight.pop(result.id)
            self._busy_s += result.seconds
            self.finished.append((result, group_id, index))
        self.ages = ages
        return RolloutRound(usable, sum(len(m.tokens) for g in usable for m in g.members),
                            self._stats(usable, ages, waited))

    def _submit(self, iteration: int, slot: int, index: int, prompt: list[int], params: SamplingParams) -> None:
        request = RolloutRequest(self.next_id, [prompt] * self.k, params, request_seed(self.seed, iteration, slot, index))
        self.in_flight[self.next_id] = (f"{iteration}.{slot}", index)  # the group id PartialRollouts would give
        self.next_id += 1
        self.pool.submit(request)

    @staticmethod
    def _group(result: RolloutResult, group_id: str, index: int) -> Group:
        """A finished group whose every trajectory is one segment of `result.version` (as if generated in that iteration)."""
        members = [
            Trajectory(list(tokens), list(logprobs), [(result.version, len(tokens))], reason)
            for tokens, logprobs, reason in zip(result.tokens, result.logprobs, result.finish_reasons, strict=True)
        ]
        return Group(group_id, index, members)

    def _stats(self, usable: list[Group], ages: list[int], waited: float) -> dict[str, float]:
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
        self._busy_s, self._since = 0.0, now
        return stats

    def publish(self, model, version: int) -> float:
        """New weights for the workers, as `version`; returns the seconds it took."""
        t = time.perf_counter()
        self.pool.publish(model, version)
        return time.perf_counter() - t

    def close(self) -> None:
        self.pool.close()


def start_async_rollouts(model, cfg: RLConfig, max_seq_len: int, seed: int, version: int, device: str,
                         dropped: int = 0) -> AsyncRollouts:
    """`rl.async.workers` workers of `model`, its weights published as `version` (the iteration), one group per
    request; `dropped`: the stale groups a resumed run had already counted."""
    a = cfg.asynchronous
    pool = RolloutWorkers(
        a.workers, model, max_batch_size=cfg.samples_per_prompt, max_seq_len=max_seq_len, device=device,
        version=version, heartbeat_timeout_s=a.heartbeat_timeout_s,
    )
    return AsyncRollouts(pool, cfg.samples_per_prompt, cfg.prompts_per_iteration, a.max_staleness, seed, dropped)
