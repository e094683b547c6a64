"""Start a script on N CPU processes with torchrun, in a subprocess (never DDP inside pytest's own process)."""

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def torchrun(script: Path, args: list[str], nproc: int = 2, timeout: int = 300) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", str(script), *args]
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise AssertionError(f"{script.name} failed on {nproc} processes:\n{done.stdout[-3000:]}\n{done.stderr[-6000:]}")
