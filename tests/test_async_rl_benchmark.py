"""benchmarks/async_rl.py is measured on a quiet machine now and then; its --smoke run keeps its code path alive."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("pair", [("sync", "async"), ("sync_partial", "async_partial")])
def test_async_rl_benchmark_smoke_ends_with_the_ratio_line(pair):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks/async_rl.py"), "--smoke", "--arms", ",".join(pair),
                           "--budget", "8"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    lines = proc.stdout.strip().splitlines()
    assert re.fullmatch(r"async ratio=\d+\.\d\d", lines[-1]), lines[-1]
    arms = json.loads(lines[-2].removeprefix("async_rl summary "))
    assert set(arms) == set(pair)
    for name, arm in arms.items():
        assert arm["iterations"] >= 1 and arm["train_s"] > 0, (name, arm)
        if name.endswith("_partial"):  # groups trained: only those whose 2 samples all finished, at most 2 per iteration
            assert 0 < arm["samples"] <= arm["iterations"] * 2 * 2 and arm["samples"] % 2 == 0
        else:
            assert arm["samples"] == arm["iterations"] * 2 * 2  # the smoke run's prompts x samples per iteration
        assert 0.0 <= arm["pass@1"] <= 1.0
    assert abs(float(lines[-1].split("=")[1]) - arms[pair[1]]["samples_per_s"] / arms[pair[0]]["samples_per_s"]) <= 0.0051
