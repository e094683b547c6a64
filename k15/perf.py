"""Memory readings for logs and summaries: current and peak resident memory of this process."""

from __future__ import annotations

import resource
import sys

import torch


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


def memory_metrics() -> dict[str, float]:
    out = {"perf/rss_mb": rss_mb(), "perf/peak_rss_mb": peak_rss_mb()}
    if torch.cuda.is_available():
        out["perf/gpu_peak_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return out
