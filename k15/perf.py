"""Memory readings for logs and summaries: resident memory of this process and peak GPU memory.

GPU peaks are per phase: every reading resets CUDA's peak counter, so a logged value is the peak
since the previous reading (one RL iteration, a span of training steps, one `gpu_phase` block).
The stage-wide peak that summary.json records survives those resets: readings fold into it, and
`stage_memory()` reports and restarts it. Without CUDA the GPU keys are simply absent.
"""

from __future__ import annotations

import resource
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import torch

_stage_gpu_peak = 0.0  # bytes: the highest GPU peak read since the current stage began


def peak_rss_mb() -> float:
    """Highest resident memory of the process so far (Linux reports KiB, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def rss_mb() -> float:
    """Resident memory now (Linux /proc; falls back to the peak elsewhere)."""
    try:
        with open("/proc/self/statm") as f:
            pages = int(f.read().split()[1])
        return pages * resource.getpagesize() / 2**20
    except OSError:
        return peak_rss_mb()


def gpu_available() -> bool:
    return torch.cuda.is_available() and torch.cuda.is_initialized()  # never start CUDA just to read 0


def read_gpu_peak_mb(reset: bool = True) -> float | None:
    """Peak allocated GPU memory (MiB, current device) since the last reset; None without CUDA."""
    global _stage_gpu_peak
    if not gpu_available():
        return None
    peak = torch.cuda.max_memory_allocated()
    _stage_gpu_peak = max(_stage_gpu_peak, peak)
    if reset:
        torch.cuda.reset_peak_memory_stats()
    return peak / 2**20


def memory_metrics() -> dict[str, float]:
    """rss now and peak so far; on GPU also allocated now and the peak since the previous call."""
    out = {"perf/rss_mb": rss_mb(), "perf/peak_rss_mb": peak_rss_mb()}
    peak = read_gpu_peak_mb()
    if peak is not None:
        out["perf/gpu_mb"] = torch.cuda.memory_allocated() / 2**20
        out["perf/gpu_peak_mb"] = peak
    return out


@contextmanager
def gpu_phase(name: str, metrics: dict[str, float]) -> Iterator[None]:
    """Record the GPU peak of one phase (e.g. rollout, train) as metrics["perf/gpu_peak_<name>_mb"]."""
    read_gpu_peak_mb()  # start the phase from a reset counter
    yield
    peak = read_gpu_peak_mb()
    if peak is not None:
        metrics[f"perf/gpu_peak_{name}_mb"] = peak


def stage_memory() -> dict[str, int]:
    """Per-stage summary values: peak rss of the process, and the stage's GPU peak (then restarted)."""
    global _stage_gpu_peak
    out = {"peak_rss_mb": round(peak_rss_mb())}
    if read_gpu_peak_mb() is not None:
        out["peak_gpu_mb"] = round(_stage_gpu_peak / 2**20)
    _stage_gpu_peak = 0.0
    return out
