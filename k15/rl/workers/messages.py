"""What crosses the queues between the trainer and a rollout worker: requests, results, the stop sentinel.

A request is one `RolloutEngine.generate` call: a batch of prompts (typically the k samples of a
group, or the unfinished members of groups being continued), the sampling parameters, optional
per-row limits and history (partial-rollout segments, as k15.rollout.partial passes them) and a
seed. The worker makes a fresh generator from the seed for each request, so a result does not
depend on which worker ran it or on what that worker ran before: the same request on the same
weights gives the same tokens.

A result carries the policy version whose weights produced every token of it: a worker picks up
new weights only between requests, never inside one.
"""

from __future__ import annotations

from dataclasses import dataclass

from k15.rollout.sampling import SamplingParams

__all__ = ["STOP", "RolloutRequest", "RolloutResult"]

STOP = None  # put on a worker's request queue: finish and exit


@dataclass
class RolloutRequest:
    id: int  # the caller's; unique among requests in flight
    prompts: list[list[int]]  # token ids per row
    params: SamplingParams
    seed: int | None = None  # None: the worker's default generator (not reproducible across workers)
    limits: list[int] | None = None  # per row, the most new tokens (a partial-rollout budget)
    history: list[int] | None = None  # per row, how many last prompt tokens are earlier output (repeat rule)


@dataclass
class RolloutResult:
    id: int  # the request's
    worker: int  # index of the worker that generated it
    version: int  # policy version of the weights that generated every token below
    tokens: list[list[int]]
    logprobs: list[list[float]]  # as the engine returns them: log p(token) at temperature 1
    finish_reasons: list[str]
    seconds: float  # generate() wall time
    weights_s: float = 0.0  # time spent picking up new weights just before this request (0: unchanged)
    error: str | None = None  # one line, when generate() raised; the worker goes on with the next request
