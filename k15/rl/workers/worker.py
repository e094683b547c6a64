"""One rollout worker process: its own engine, fed requests, answering with results and heartbeats.

`run_worker` is the target of a spawn-context Process (fork is unsafe once the trainer has threads
or CUDA). Its steps:

1. Die with the parent: PR_SET_PDEATHSIG(SIGKILL), then exit if the parent is already gone (it may
   have died before the signal was armed). One thread (`torch.set_num_threads`): workers and the
   trainer share the cores.
2. Build the policy's skeleton from its transformers config on the meta device and give it empty
   CPU (or `device`) memory: no random init, since the weights come next. This HF model is only a
   holder the engine copies from; its non-persistent buffers (rotary inv_freq) stay uninitialized
   because the engine computes its own rotary table from the config.
3. Copy the newest published weights into it and build the RolloutEngine from it.
4. Loop: take a request (waiting at most one beat interval, then beat and wait again); on the stop
   sentinel, exit 0. Otherwise pick up new weights if a newer version was published (so weights
   change only between requests), generate with a generator seeded from the request, and put a
   result with the version that produced it. A request whose generate() raises gets a result
   with `error` set, and the worker goes on.

Heartbeats: the worker writes `time.monotonic()` (one clock for all processes of a machine) into
its cell of a shared array while idle, around weight loads, and once per prefill and decode step
(the engine's `_logits` hook), so a long generation is not mistaken for a hang. The cell stays 0.0
until the engine is built: the pool reads that as "still starting".
"""

from __future__ import annotations

import ctypes
import os
import queue
import signal
import sys
import time
from dataclasses import dataclass

import torch
import transformers

from k15.rl.workers.messages import RolloutRequest, RolloutResult
from k15.rl.workers.weights import WeightSubscriber
from k15.rollout.engine import RolloutEngine

__all__ = ["WorkerConfig", "run_worker"]

PR_SET_PDEATHSIG = 1


@dataclass
class WorkerConfig:
    model_config: transformers.PretrainedConfig  # of a Llama/Qwen2-family causal LM
    dtype: torch.dtype
    max_batch_size: int
    max_seq_len: int
    device: str = "cpu"
    threads: int = 1
    beat_interval_s: float = 1.0  # the longest an idle worker waits for a request before beating again


class _BeatingEngine(RolloutEngine):
    """The rollout engine, beating once per forward pass (it calls `_logits` once per prefill and decode step)."""

    beat = staticmethod(lambda: None)

    def _logits(self, hidden: torch.Tensor) -> torch.Tensor:
        self.beat()
        return super()._logits(hidden)


def die_with_parent(parent_pid: int) -> None:
    """SIGKILL this process when its parent exits (Linux); exit now if the parent is already gone.

    PR_SET_PDEATHSIG follows the parent *thread* that started the child: start workers from a thread
    that lives as long as the pool (the trainer's main thread).
    """
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    if os.getppid() != parent_pid:
        os._exit(0)


def build_model(config: WorkerConfig) -> transformers.PreTrainedModel:
    """The policy's skeleton with uninitialized memory on `config.device`, to be filled by the subscriber."""
    with torch.device("meta"):
        model = transformers.AutoModelForCausalLM.from_config(config.model_config)
    model = model.to(config.dtype).to_empty(device=config.device)
    model.tie_weights()  # to_empty gives each name of a tied tensor its own memory
    return model.eval()


def run_worker(
    index: int,
    parent_pid: int,
    config: WorkerConfig,
    weights: WeightSubscriber,
    requests,  # multiprocessing Queue of RolloutRequest | STOP
    results,  # multiprocessing Queue of RolloutResult
    beats,  # shared float64 array, one cell per worker
    busy,  # shared int64 array, one cell per worker: the request id being generated, -1 when none
) -> None:
    die_with_parent(parent_pid)
    torch.set_num_threads(config.threads)

    def beat() -> None:
        beats[index] = time.monotonic()

    model = build_model(config)
    version = weights.update(model)
    engine = _BeatingEngine(model, max_batch_size=config.max_batch_size, max_seq_len=config.max_seq_len)
    engine.beat = beat
    beat()  # ready

    while True:
        try:
            request: RolloutRequest | None = requests.get(timeout=config.beat_interval_s)
        except queue.Empty:
            beat()
            continue
        if request is None:
            return
        beat()
        started = time.perf_counter()
        if (new := weights.update(model)) is not None:  # between requests: never inside one
            engine.load_weights(model)
            version = new
        weights_s = time.perf_counter() - started if new is not None else 0.0
        busy[index] = request.id  # set after the weights are fixed: a publish from now on waits for the next request
        beat()
        results.put(_generate(engine, request, index, version, weights_s, config.device))
        busy[index] = -1
        beat()


def _generate(
    engine: RolloutEngine, request: RolloutRequest, index: int, version: int, weights_s: float, device: str
) -> RolloutResult:
    generator = None
    if request.seed is not None:
        generator = torch.Generator(device=device).manual_seed(request.seed)
    started = time.perf_counter()
    try:
        out = engine.generate(request.prompts, request.params, generator, limits=request.limits, history=request.history)
    except Exception as exc:  # the request's fault (too long a prompt, bad limits): report it, keep serving
        message = f"{type(exc).__name__}: {exc}".splitlines()[0]
        return RolloutResult(request.id, index, version, [], [], [], time.perf_counter() - started, weights_s, message)
    return RolloutResult(
        request.id, index, version, out.tokens, out.logprobs, out.finish_reasons, time.perf_counter() - started, weights_s
    )
