"""RolloutWorkers: the trainer's handle on N rollout worker processes (k15.rl.workers.worker).

1. Start: allocate the shared weights (WeightPublisher, version `version`), a heartbeat cell and a
   busy cell per worker, and one request queue and one result queue per worker; start the workers
   (spawn, daemon) from this thread. Per-worker queues, not one shared pair: a worker killed while
   holding a shared queue's lock would wedge the others, and the pool knows which requests each
   worker holds.
2. `publish(model)`: new weights for the workers, taken up by each one before its next request.
3. `submit(request)`: to the worker with the fewest requests outstanding. `get(timeout)`: the next
   result from any worker; it waits on the result queues and on the processes, so a worker's
   death wakes it, and it checks the workers at least once per second.
4. `check()`: raises a one-line K15Error naming the first worker (index, pid) that exited, did not
   start within `start_timeout_s`, or has not beaten for `heartbeat_timeout_s`.
5. `close()`: the stop sentinel to every worker, a short wait, then SIGTERM and SIGKILL for any that
   remain. The same kill runs when the pool is garbage collected or the interpreter exits
   (weakref.finalize), and each worker also has PR_SET_PDEATHSIG, so a SIGKILLed trainer leaves no
   worker behind.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import queue
import signal
import time
import weakref
from multiprocessing.connection import wait

from torch import nn

from k15.errors import K15Error
from k15.rl.workers.messages import STOP, RolloutRequest, RolloutResult
from k15.rl.workers.weights import WeightPublisher
from k15.rl.workers.worker import WorkerConfig, run_worker, skeleton_of

__all__ = ["RolloutWorkers"]


def _stop(processes: list) -> None:
    """SIGTERM, then SIGKILL, every worker still running, and reap them. Safe at interpreter exit."""
    processes = [p for p in processes if p.pid is not None]  # one that failed to start has nothing to stop
    for p in processes:
        if p.exitcode is None:
            p.terminate()
            try:
                os.kill(p.pid, signal.SIGCONT)  # a stopped process would keep SIGTERM pending
            except ProcessLookupError:
                pass
    deadline = time.monotonic() + 2.0
    for p in processes:
        p.join(max(0.0, deadline - time.monotonic()))
        if p.exitcode is None:  # ignores SIGTERM
            p.kill()
            p.join(5.0)


class RolloutWorkers:
    def __init__(
        self,
        n: int,
        model: nn.Module,
        *,
        max_batch_size: int,
        max_seq_len: int,
        device: str = "cpu",
        version: int = 0,
        heartbeat_timeout_s: float = 60.0,
        start_timeout_s: float = 300.0,
        locked: bool | None = None,
    ):
        """n workers of `model` (a transformers causal LM, k15's VLM or a transformers VLM), its weights published
        as `version`."""
        if n < 1:
            raise ValueError(f"need at least one worker, got {n}")
        ctx = mp.get_context("spawn")
        self.weights = WeightPublisher(model, version=version, locked=locked, context=ctx)
        self.heartbeat_timeout_s, self.start_timeout_s = heartbeat_timeout_s, start_timeout_s
        self.beats = ctx.RawArray("d", n)  # 0.0: still starting
        self.busy = ctx.RawArray("q", [-1] * n)
        self.requests = [ctx.Queue() for _ in range(n)]
        self.results = [ctx.Queue() for _ in range(n)]
        self.outstanding: list[set[int]] = [set() for _ in range(n)]  # request ids per worker
        config = WorkerConfig(
            skeleton=skeleton_of(model), max_batch_size=max_batch_size,
            max_seq_len=max_seq_len, device=device,
            beat_interval_s=min(1.0, heartbeat_timeout_s / 4),  # several beats per timeout even when idle
        )
        self.processes = [
            ctx.Process(
                target=run_worker, name=f"k15-rollout-{i}", daemon=True,
                args=(i, os.getpid(), config, self.weights.subscriber(), self.requests[i], self.results[i], self.beats, self.busy),
            )
            for i in range(n)
        ]
        self._finalizer = weakref.finalize(self, _stop, self.processes)  # at GC or exit, whichever comes first
        self.started_at = time.monotonic()
        for p in self.processes:
            p.start()
        self.closed = False

    def __len__(self) -> int:
        return len(self.processes)

    def __enter__(self) -> RolloutWorkers:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.processes]

    # ------------------------------------------------------------------ work

    def publish(self, model: nn.Module, version: int | None = None) -> int:
        """Publish `model`'s weights (default version: the current one + 1); returns the version."""
        return self.weights.publish(model, version)

    def submit(self, request: RolloutRequest) -> int:
        """Queue `request` on the least loaded worker; returns that worker's index."""
        self._check_open()
        i = min(range(len(self)), key=lambda w: len(self.outstanding[w]))
        self.outstanding[i].add(request.id)
        self.requests[i].put(request)
        return i

    def pending(self) -> int:
        return sum(len(ids) for ids in self.outstanding)

    def get(self, timeout: float | None = None) -> RolloutResult | None:
        """The next finished result (None when `timeout` seconds pass first); raises K15Error on a failed worker or request."""
        self._check_open()
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            for i, q in enumerate(self.results):
                try:
                    result: RolloutResult = q.get_nowait()
                except queue.Empty:
                    continue
                self.outstanding[i].discard(result.id)
                if result.error is not None:
                    raise K15Error(f"rollout worker {i} (pid {self.processes[i].pid}) failed request {result.id}: {result.error}")
                return result
            self.check()
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                return None
            # Woken by a result or by a worker's exit; at least once a second, to look at the heartbeats.
            # (Queue._reader is the queue's receiving connection: CPython has no public handle to wait on.)
            handles = [q._reader for q in self.results] + [p.sentinel for p in self.processes]
            wait(handles, timeout=1.0 if left is None else min(1.0, left))

    # ------------------------------------------------------------------ health

    def wait_ready(self, timeout: float | None = None) -> None:
        """Block until every worker has built its engine (raises K15Error if one fails or takes too long)."""
        timeout = self.start_timeout_s if timeout is None else timeout
        deadline = time.monotonic() + timeout
        while not all(self.beats[i] > 0.0 for i in range(len(self))):
            self.check()
            if time.monotonic() > deadline:
                slow = next(i for i in range(len(self)) if self.beats[i] == 0.0)
                raise K15Error(f"rollout worker {slow} (pid {self.processes[slow].pid}) not ready after {timeout:g} s")
            wait([p.sentinel for p in self.processes], timeout=0.05)

    def check(self) -> None:
        """Raise a one-line K15Error naming the first worker that died, never started, or stopped beating."""
        if self.closed:
            return
        now = time.monotonic()
        for i, p in enumerate(self.processes):
            name = f"rollout worker {i} (pid {p.pid})"
            held = f" while generating request {self.busy[i]}" if self.busy[i] >= 0 else ""
            if p.exitcode is not None:
                how = f"was killed by {signal.Signals(-p.exitcode).name}" if p.exitcode < 0 else f"exited with code {p.exitcode}"
                raise K15Error(f"{name} {how}{held}; {len(self.outstanding[i])} request(s) lost")
            if self._stale(i, now):
                beat = self.beats[i]
                if beat == 0.0:
                    raise K15Error(f"{name} did not start within {self.start_timeout_s:g} s")
                raise K15Error(f"{name} hung: no heartbeat for {now - beat:.1f} s (limit {self.heartbeat_timeout_s:g} s){held}")

    def _stale(self, i: int, now: float) -> bool:
        """Worker i has not started within start_timeout_s, or has not beaten for heartbeat_timeout_s."""
        beat = self.beats[i]
        if beat == 0.0:
            return now - self.started_at > self.start_timeout_s
        return now - beat > self.heartbeat_timeout_s

    # ------------------------------------------------------------------ shutdown

    def close(self, grace_s: float = 5.0) -> None:
        """Stop every worker: the sentinel, `grace_s` to finish, then SIGTERM/SIGKILL. Idempotent."""
        if self.closed:
            return
        self.closed = True
        for q in self.requests:
            q.put(STOP)
        deadline = time.monotonic() + grace_s
        for i, p in enumerate(self.processes):
            if not self._stale(i, time.monotonic()):  # a hung worker will not read the sentinel: no grace
                p.join(max(0.0, deadline - time.monotonic()))
        self._finalizer()  # kills what is left; runs once
        for q in self.requests + self.results:
            q.cancel_join_thread()  # unread items must not block our exit
            q.close()

    def _check_open(self) -> None:
        if self.closed:
            raise K15Error("the rollout workers are closed")
