"""Publishing the trainer's weights to rollout workers on one machine, through shared memory.

The trainer owns a `WeightPublisher`; each worker process holds a `WeightSubscriber` (made by
`publisher.subscriber()` and passed to the process when it is started).

1. Once, at construction: one flat shared-memory byte buffer is allocated for the policy's whole
   state dict (each tensor a 64-byte-aligned view of it; tied tensors share one slot), behind a
   64-byte header that holds two int64 cells: `seq` and `version`. One buffer means one file
   descriptor to pass to a child, whatever the number of tensors.
2. `publish(model)` copies the model's current tensors into the views and sets a new version. It
   allocates no tensor memory: `copy_` into fixed views.
3. `subscriber.update(model)` checks the version and, only when it changed, copies the shared
   tensors into the worker's own model, which it then loads into its engine.

Consistency (a reader never mixes two versions): a seqlock, chosen over a lock so that the trainer
never waits for a worker that is copying. The writer makes `seq` odd, copies, writes `version`, and
makes `seq` even again; a reader copies only from an even `seq` and keeps the copy only when `seq`
is unchanged afterwards, else it copies again. A reader therefore copies into its own tensors
(never hands out views of the shared buffer, which the next publish may overwrite mid-use) and may
retry when a publish overlaps it (counted in `retries`); publishes are seconds apart and a copy
takes milliseconds, so retries are rare.

The seqlock needs the header stores and the tensor stores to be seen by other processes in program
order. Each step is a separate C call (so no compiler reorders them), the cells are single aligned
8-byte loads and stores through ctypes, and x86-64 keeps stores in order and loads in order (TSO).
A weakly ordered CPU (ARM) gives no such guarantee without fences that Python cannot issue, so
there (or with `locked=True`) a multiprocessing lock is held by the writer and by each reader for
the whole copy instead; the trainer may then wait for one worker's copy.
"""

from __future__ import annotations

import ctypes
import multiprocessing as mp
import platform
import time
from dataclasses import dataclass

import torch
from torch import nn

from k15.errors import K15Error

__all__ = ["WeightPublisher", "WeightSubscriber"]

_ALIGN = 64  # bytes: every view starts on a cache line, and any dtype's element size divides it
_HEADER = 64  # bytes before the first tensor: seq (int64) at 0, version (int64) at 8
_ORDERED_STORES = {"x86_64", "amd64", "i386", "i686"}  # TSO: the seqlock needs no fences here


@dataclass(frozen=True)
class _Slot:
    """Where one tensor lives in the flat buffer."""

    offset: int  # bytes from the start of the buffer
    dtype: torch.dtype
    shape: tuple[int, ...]

    @property
    def nbytes(self) -> int:
        return torch.Size(self.shape).numel() * self.dtype.itemsize


def _unique_tensors(model: nn.Module) -> dict[str, torch.Tensor]:
    """The model's state dict without second names of one tensor (tied embeddings): first name wins."""
    seen: set[tuple[int, torch.dtype, tuple[int, ...]]] = set()
    out: dict[str, torch.Tensor] = {}
    for name, t in model.state_dict().items():
        key = (t.data_ptr(), t.dtype, tuple(t.shape))
        if key not in seen:
            seen.add(key)
            out[name] = t
    return out


class _Shared:
    """The flat shared buffer, its layout, the header cells and the optional lock (picklable for a spawn)."""

    def __init__(self, buffer: torch.Tensor, layout: dict[str, _Slot], lock):
        self.buffer, self.layout, self.lock = buffer, layout, lock
        self._attach()

    def _attach(self) -> None:
        # Views and ctypes cells point into this process's mapping, so they are rebuilt after unpickling.
        ptr = self.buffer.data_ptr()
        self.seq = ctypes.c_int64.from_address(ptr)
        self.version = ctypes.c_int64.from_address(ptr + 8)
        self.views = {
            name: self.buffer[s.offset : s.offset + s.nbytes].view(s.dtype).view(s.shape) for name, s in self.layout.items()
        }

    def __getstate__(self) -> dict:
        return {"buffer": self.buffer, "layout": self.layout, "lock": self.lock}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["buffer"], state["layout"], state["lock"])


class WeightPublisher:
    """The trainer's side: shared copies of the policy's tensors and the version they hold."""

    def __init__(self, model: nn.Module, version: int = 0, locked: bool | None = None, context=None):
        """Allocate the shared buffer for `model`'s state dict and publish it as `version`.

        locked: None picks the seqlock on x86-64 and the lock elsewhere (see the module docstring).
        context: the multiprocessing context the workers are started with (for the lock).
        """
        if locked is None:
            locked = platform.machine().lower() not in _ORDERED_STORES
        ctx = context or mp.get_context("spawn")
        layout: dict[str, _Slot] = {}
        by_tensor: dict[tuple[int, torch.dtype, tuple[int, ...]], _Slot] = {}
        offset = _HEADER
        for name, t in model.state_dict().items():
            key = (t.data_ptr(), t.dtype, tuple(t.shape))
            if key not in by_tensor:  # a tied tensor's second name points at the first one's slot
                by_tensor[key] = _Slot(offset, t.dtype, tuple(t.shape))
                offset += -(-by_tensor[key].nbytes // _ALIGN) * _ALIGN
            layout[name] = by_tensor[key]
        buffer = torch.zeros(offset, dtype=torch.uint8).share_memory_()
        self.shared = _Shared(buffer, layout, ctx.Lock() if locked else None)
        self.locked = locked
        self.nbytes = offset
        self.last_publish_s = 0.0
        self.publish(model, version)

    @property
    def version(self) -> int:
        return self.shared.version.value

    def subscriber(self) -> WeightSubscriber:
        """A handle for one worker; pass it to the worker's Process when starting it."""
        return WeightSubscriber(self.shared)

    def publish(self, model: nn.Module, version: int | None = None) -> int:
        """Copy `model`'s tensors into shared memory as `version` (default: the current one + 1); returns it."""
        start = time.perf_counter()
        version = self.version + 1 if version is None else int(version)
        s = self.shared
        pairs = []  # checked before the write starts, so a bad model never leaves torn data behind
        for name, t in _unique_tensors(model).items():
            view = s.views.get(name)
            if view is None or view.shape != t.shape:
                raise K15Error(f"cannot publish weights: tensor {name} {tuple(t.shape)} is not in the shared layout")
            pairs.append((view, t.detach()))
        if s.lock is not None:
            s.lock.acquire()
        try:
            s.seq.value += 1  # odd: a write is under way, readers wait or retry
            for view, t in pairs:
                view.copy_(t)
            s.version.value = version
            s.seq.value += 1  # even: one whole version again
        finally:
            if s.lock is not None:
                s.lock.release()
        self.last_publish_s = time.perf_counter() - start
        return version


class WeightSubscriber:
    """A worker's side: copies a whole published version into its own model when the version changed."""

    def __init__(self, shared: _Shared):
        self.shared = shared
        self.loaded: int | None = None  # the version last copied into the model
        self.retries = 0  # reads discarded because a publish overlapped them
        self._targets: tuple[nn.Module, dict[str, torch.Tensor]] | None = None  # (model, its tensors by shared name)

    def __getstate__(self) -> dict:
        return {"shared": self.shared}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["shared"])

    def version(self) -> int:
        """The newest whole version (waits out a publish in progress)."""
        s = self.shared
        while True:
            seq = s.seq.value
            if not seq & 1:
                version = s.version.value
                if s.seq.value == seq:
                    return version
            time.sleep(0.0005)

    def update(self, model: nn.Module) -> int | None:
        """Copy the newest version into `model` when it is not the one loaded; returns it, or None if unchanged."""
        if self.version() == self.loaded:
            return None
        self.loaded = self.read_into(self._tensors_of(model))
        return self.loaded

    def read_into(self, targets: dict[str, torch.Tensor]) -> int:
        """Copy one whole version into `targets` (shared name -> tensor of the same shape); returns its version."""
        s = self.shared
        with torch.no_grad():
            if s.lock is not None:
                with s.lock:
                    self._copy(targets)
                    return s.version.value
            while True:
                seq = s.seq.value
                if seq & 1:  # a publish is writing: let it finish
                    time.sleep(0.0005)
                    continue
                self._copy(targets)
                version = s.version.value
                if s.seq.value == seq:
                    return version
                self.retries += 1  # a publish overlapped the copy: what we have may mix two versions

    def _copy(self, targets: dict[str, torch.Tensor]) -> None:
        for name, t in targets.items():
            t.copy_(self.shared.views[name])

    def _tensors_of(self, model: nn.Module) -> dict[str, torch.Tensor]:
        """The model's tensors by their names in the shared layout, checked once per model."""
        if self._targets is not None and self._targets[0] is model:
            return self._targets[1]
        tensors = _unique_tensors(model)
        layout = self.shared.layout
        for name, t in tensors.items():
            if name not in layout or layout[name].shape != tuple(t.shape):
                raise K15Error(f"worker model tensor {name} {tuple(t.shape)} does not match the published weights")
        missing = [n for n in layout if n not in model.state_dict()]
        if missing:
            raise K15Error(f"worker model lacks published tensor {missing[0]} ({len(missing)} missing)")
        self._targets = (model, tensors)
        return tensors
