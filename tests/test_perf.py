"""k15.perf: GPU peaks are per reading (reset each time) while the stage peak survives the resets."""

from __future__ import annotations

import torch

from k15 import perf


def test_cpu_only_has_no_gpu_keys():
    if perf.gpu_available():
        return
    assert set(perf.memory_metrics()) == {"perf/rss_mb", "perf/peak_rss_mb"}
    assert set(perf.stage_memory()) == {"peak_rss_mb"}


def test_gpu_peaks_reset_per_reading_and_fold_into_the_stage_peak(monkeypatch):
    peak = {"now": 0}  # a fake CUDA allocator: max_memory_allocated until reset_peak_memory_stats
    monkeypatch.setattr(perf, "gpu_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda *a, **k: peak["now"])
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", lambda *a, **k: peak.update(now=0))
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda *a, **k: 0)
    monkeypatch.setattr(perf, "_stage_gpu_peak", 0.0)
    mib = 2**20
    peak["now"] = 300 * mib
    assert perf.memory_metrics()["perf/gpu_peak_mb"] == 300  # iteration 1
    peak["now"] = 100 * mib
    metrics: dict[str, float] = {}
    with perf.gpu_phase("rollout", metrics):
        peak["now"] = 50 * mib
    assert metrics == {"perf/gpu_peak_rollout_mb": 50}  # the phase's own peak, not iteration 1's
    peak["now"] = 20 * mib
    assert perf.memory_metrics()["perf/gpu_peak_mb"] == 20
    assert perf.stage_memory()["peak_gpu_mb"] == 300  # the stage saw 300 MiB at its worst
    peak["now"] = 10 * mib
    assert perf.stage_memory()["peak_gpu_mb"] == 10  # the next stage starts afresh
