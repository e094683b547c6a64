"""One rollout worker process: its own engine, fed requests, answering with results and heartbeats.

`run_worker` is the target of a spawn-context Process (fork is unsafe once the trainer has threads
or CUDA). Its steps:

1. Die with the parent: PR_SET_PDEATHSIG(SIGKILL), then exit if the parent is already gone (it may
   have died before the signal was armed). One thread (`torch.set_num_threads`): workers and the
   trainer share the cores.
2. Build the policy from its skeleton (`skeleton_of`: the trainer's module with every tensor on the
   meta device, so any policy class pickles without its weights: a transformers causal LM, k15's
   VLM, a transformers VLM) and give it empty CPU (or `device`) memory: no random init, since the
   weights come next. Every name of a shared tensor (tied embeddings, a buffer of two modules) is tied
   again (to_empty gives each name its own memory), the trainer's hooks are left behind, and the
   non-persistent buffers (rotary inv_freq of the decoder and of a vision tower), which are not
   in the published state dict, are set from the values the skeleton carries; transformers' record of
   which outputs each model class can capture (filled by __init__, which an unpickled model never
   ran) is filled in.
3. Copy the newest published weights into it and build its engine from it: the RolloutEngine, or
   the VisionRolloutEngine for a VLM (requests then hold ImagePrompts, pixels included).
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

import copy
import ctypes
import os
import queue
import signal
import sys
import time
from dataclasses import dataclass

import torch
from torch import nn
from transformers import PreTrainedModel

from k15.models.policy import is_vlm
from k15.rl.workers.messages import RolloutRequest, RolloutResult
from k15.rl.workers.weights import WeightSubscriber
from k15.rollout.engine import RolloutEngine
from k15.rollout.vision import VisionRolloutEngine

__all__ = ["Skeleton", "WorkerConfig", "build_model", "run_worker", "skeleton_of"]

PR_SET_PDEATHSIG = 1


# A module's forward and backward hooks: the trainer's own (closures, bound methods of objects that hold locks
# or tensors), not the worker's; transformers' output capture installs its hooks again at the first forward.
_HOOKS = ("_forward_hooks", "_forward_hooks_with_kwargs", "_forward_hooks_always_called", "_forward_pre_hooks",
          "_forward_pre_hooks_with_kwargs", "_backward_hooks", "_backward_pre_hooks")


@dataclass
class Skeleton:
    """The policy without its weights: what a worker builds its model from."""

    module: nn.Module  # every parameter and buffer on the meta device
    ties: list[list[str]]  # the names of one shared tensor (tied embeddings, a buffer of two modules), each list > 1
    buffers: dict[str, torch.Tensor]  # the non-persistent buffers' values (not in the published state dict)


def _names_by_tensor(model: nn.Module) -> dict[int, list[str]]:
    """Every name of every parameter and buffer, grouped by the tensor they name (parameters first)."""
    names: dict[int, list[str]] = {}
    for name, t in [*model.named_parameters(remove_duplicate=False), *model.named_buffers(remove_duplicate=False)]:
        names.setdefault(id(t), []).append(name)
    return names


def skeleton_of(model: nn.Module) -> Skeleton:
    """`model` with meta tensors in place of its own and no forward or backward hooks, without copying its weights
    or its hooks (a deepcopy whose memo maps each tensor to an empty meta one and each hook table to an empty
    one; a tensor shared by several names stays one object)."""
    tensors = list(model.parameters()) + list(model.buffers())
    memo: dict[int, object] = {
        id(t): nn.Parameter(torch.empty_like(t, device="meta"), t.requires_grad) if isinstance(t, nn.Parameter)
        else torch.empty_like(t, device="meta") for t in tensors}
    for m in model.modules():
        for attr in _HOOKS:
            table = getattr(m, attr, None)
            if table is not None:
                memo[id(table)] = type(table)()
    persistent = model.state_dict().keys()
    buffers = {name: b.detach().cpu().clone() for name, b in model.named_buffers() if name not in persistent}
    module = copy.deepcopy(model, memo)
    for m in module.modules():
        if getattr(m, "_output_capturing_hooks_installed", False):
            m._output_capturing_hooks_installed = False
    return Skeleton(module, [n for n in _names_by_tensor(model).values() if len(n) > 1], buffers)


@dataclass
class WorkerConfig:
    skeleton: Skeleton
    max_batch_size: int
    max_seq_len: int
    device: str = "cpu"
    threads: int = 1
    beat_interval_s: float = 1.0  # the longest an idle worker waits for a request before beating again


def beat_per_step(engine: RolloutEngine, beat) -> None:
    """Make `engine` call `beat()` once per forward pass (it calls `_logits` once per prefill and decode step)."""
    logits = engine._logits

    def beating(hidden: torch.Tensor) -> torch.Tensor:
        beat()
        return logits(hidden)

    engine._logits = beating


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


def build_model(config: WorkerConfig) -> nn.Module:
    """The policy with uninitialized memory on `config.device`, to be filled by the subscriber; ties and
    non-persistent buffers as in the trainer's model."""
    skeleton = config.skeleton
    model = skeleton.module.to_empty(device=config.device)
    for first, *others in skeleton.ties:  # to_empty gave each name of a shared tensor its own memory
        owner, _, attr = first.rpartition(".")
        holder = model.get_submodule(owner)
        shared = holder._parameters[attr] if attr in holder._parameters else holder._buffers[attr]
        for name in others:
            owner, _, attr = name.rpartition(".")
            module = model.get_submodule(owner)
            table = module._parameters if attr in module._parameters else module._buffers
            table[attr] = shared
    with torch.no_grad():
        for name, value in skeleton.buffers.items():
            model.get_buffer(name).copy_(value)
    register_output_capture(model)
    return model.eval()


def register_output_capture(model: nn.Module) -> None:
    """What a transformers model's __init__ registers and an unpickled one never ran: which outputs its class can
    capture (hidden states a LLaVA reads from its vision tower). Keyed by class, so one instance per class will do."""
    try:
        from transformers.utils.output_capturing import _CAN_RECORD_REGISTRY
    except ImportError:  # a transformers without the registry captures outputs its own way
        return
    for m in model.modules():
        if isinstance(m, PreTrainedModel):
            _CAN_RECORD_REGISTRY[m] = m._can_record_outputs


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
    engine_class = VisionRolloutEngine if is_vlm(model) else RolloutEngine
    engine = engine_class(model, max_batch_size=config.max_batch_size, max_seq_len=config.max_seq_len)
    beat_per_step(engine, beat)
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
