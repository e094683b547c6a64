"""A run killed with SIGKILL resumes with `--resume RUN_DIR` and ends bit for bit where an
uninterrupted run ends: no batch replayed, none skipped, optimizer and schedule restored."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch
from safetensors.torch import load_file

from tests.tiny import TINY

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
SFT_RUN = [o for o in TINY if not o.startswith(("stages=", "sft.max_steps", "trainer.checkpoint"))] + [
    "stages=[pretrain,sft]", "sft.max_steps=160", "trainer.checkpoint_every_n_steps=20", "run.threads=1",
]


def command(*args: str) -> list[str]:
    return [sys.executable, "-m", "experiments.run", *args]


def weights(run_dir: Path, stage: str) -> dict[str, torch.Tensor]:
    return load_file(run_dir / stage / "model" / "model.safetensors")


def kill_when(path_pattern: str, run_dir: Path, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if list(run_dir.glob(path_pattern)):
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            return
        if proc.poll() is not None:
            raise AssertionError(f"the run ended (rc={proc.returncode}) before {path_pattern} appeared")
        time.sleep(0.01)
    proc.kill()
    raise AssertionError(f"{path_pattern} never appeared")


def kill_then_resume(run_args: list[str], stage: str, kill_at: str, tmp_path: Path) -> tuple[dict, str]:
    """Run once whole; run again, SIGKILL it when `kill_at` appears, `--resume` it; the two final
    exports of `stage` must be equal bit for bit. Returns the checkpoint resumed from and the resume's stderr."""
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    subprocess.run(command("quickstart", *run_args, f"run.dir={whole}"), env=ENV, check=True, capture_output=True)
    proc = subprocess.Popen(command("quickstart", *run_args, f"run.dir={cut}"), env=ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    kill_when(kill_at, cut, proc)
    assert not (cut / stage / "model").exists(), f"the run was killed before {stage} finished"
    before_resume = torch.load(cut / stage / "checkpoints" / "last.ckpt", weights_only=False)

    done = subprocess.run(command("--resume", str(cut)), env=ENV, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"{stage}: resuming from" in done.stderr
    a, b = weights(whole, stage), weights(cut, stage)
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name
    return before_resume, done.stderr


def test_sft_killed_mid_stage_resumes_bit_for_bit(tmp_path):
    _, stderr = kill_then_resume(SFT_RUN, "sft", "sft/checkpoints/step40.ckpt", tmp_path)
    assert "pretrain: finished before, skipped" in stderr


def test_resume_of_a_missing_or_corrupt_run_is_a_clear_error(tmp_path):
    done = subprocess.run(command("--resume", str(tmp_path)), env=ENV, capture_output=True, text=True)
    assert done.returncode == 2 and "no config.yaml" in done.stderr and "Traceback" not in done.stderr


def test_truncated_checkpoint_names_the_file(tmp_path):
    import pytest

    from k15.checkpoint_io import AtomicCheckpointIO
    from k15.errors import CheckpointError

    io = AtomicCheckpointIO()
    path = tmp_path / "last.ckpt"
    io.save_checkpoint({"state_dict": {"w": torch.ones(1000)}}, path)
    assert not list(tmp_path.glob(".*.tmp"))  # written under a temporary name, then renamed
    assert torch.equal(io.load_checkpoint(path)["state_dict"]["w"], torch.ones(1000))
    path.write_bytes(path.read_bytes()[:500])
    with pytest.raises(CheckpointError, match="last.ckpt"):
        io.load_checkpoint(path)


RL_RUN = [o for o in TINY if not o.startswith("stages=")] + [
    "stages=[pretrain,rl]", "run.threads=1", "rl.iterations=14", "rl.checkpoint_every_n_iterations=2",
    "rl.prompts_per_iteration=4", "rl.samples_per_prompt=4", "rl.max_new_tokens=30", "rl.partial.budget=8",
    "rl.sampling.prioritized=true", "rl.lr=1e-3",
]


def test_rl_killed_mid_stage_resumes_bit_for_bit(tmp_path):
    """With prioritized sampling on and partial rollouts waiting in the buffer."""
    checkpoint, _ = kill_then_resume(RL_RUN, "rl", "rl/checkpoints/iteration000006.ckpt", tmp_path)
    state = checkpoint["k15_rl"]
    # The kill can land between writing iteration000006.ckpt and last.ckpt: last is then iteration 4.
    assert state["iteration"] >= 4 and state["rollouts"], "the checkpoint holds the RL state"
