"""A run killed with SIGKILL, even in the middle of a checkpoint save, resumes with `--resume RUN_DIR`
and ends bit for bit where an uninterrupted run ends: the resumed process says where it continues,
trains only what was left, and the record of what each step consumed (k15.callbacks.data_order)
equals the uninterrupted run's: nothing replayed, nothing skipped.

The helpers here also serve test_preemption.py.
"""

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.tiny import TINY

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
SFT_RUN = [o for o in TINY if not o.startswith(("stages=", "sft.max_steps", "trainer.checkpoint"))] + [
    "stages=[pretrain,sft]", "sft.max_steps=160", "trainer.checkpoint_every_n_steps=20", "run.threads=1",
    "trainer.record_data_order=true",
]
RL_RUN = [o for o in TINY if not o.startswith("stages=")] + [
    "stages=[pretrain,rl]", "run.threads=1", "rl.iterations=14", "rl.checkpoint_every_n_iterations=2",
    "rl.prompts_per_iteration=4", "rl.samples_per_prompt=4", "rl.max_new_tokens=30", "rl.partial.budget=8",
    "rl.sampling.prioritized=true", "rl.lr=1e-3",
]
# What each stage records per step (k15.callbacks.data_order): file, counter, consumed ids.
RECORDS = {"pretrain": ("data_order.jsonl", "step", "examples"), "sft": ("data_order.jsonl", "step", "examples"),
           "rl": ("drawn.jsonl", "iteration", "prompts")}
UNITS = {"sft": "step", "rl": "iteration"}


def command(*args: str) -> list[str]:
    return [sys.executable, "-m", "experiments.run", *args]


_uninterrupted: dict[tuple, Path] = {}


def uninterrupted(run_args: list[str], tmp_path_factory) -> Path:
    """The run without interruption; made once per session for each list of overrides."""
    key = tuple(run_args)
    if key not in _uninterrupted:
        run_dir = tmp_path_factory.mktemp("uninterrupted") / "run"
        subprocess.run(command("quickstart", *run_args, f"run.dir={run_dir}"), env=ENV, check=True, capture_output=True)
        _uninterrupted[key] = run_dir
    return _uninterrupted[key]


def launch(args: list[str], log: Path, env: dict | None = None) -> subprocess.Popen:
    """`python -m experiments.run ARGS` in a subprocess, its stderr to `log` (a pipe nobody reads could fill and block it)."""
    return subprocess.Popen(command(*args), env=env or ENV, stdout=subprocess.DEVNULL, stderr=log.open("w"))


def start(run_args: list[str], run_dir: Path, env: dict | None = None) -> subprocess.Popen:
    """The run in a subprocess, its stderr to RUN_DIR.stderr."""
    return launch(["quickstart", *run_args, f"run.dir={run_dir}"], run_dir.with_suffix(".stderr"), env)


def wait_for(ready, proc: subprocess.Popen, what: str, timeout: float = 180) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if ready():
            return
        if proc.poll() is not None:
            raise AssertionError(f"the run ended (rc={proc.returncode}) before {what}")
        time.sleep(0.01)
    proc.kill()
    raise AssertionError(f"{what}: not within {timeout} s")


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []


def resume(run_dir: Path) -> str:
    """`--resume RUN_DIR`; it must finish. Returns its stderr."""
    done = subprocess.run(command("--resume", str(run_dir)), env=ENV, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stderr


def resumed_at(stderr: str, stage: str) -> tuple[int, int]:
    """(step or iteration, of how many) from the one line the resumed stage prints once Lightning restored it."""
    found = re.findall(rf"^{stage}: resumed at {UNITS[stage]} (\d+) of (\d+) from \S+last\.ckpt$", stderr, re.M)
    assert len(found) == 1, f"expected one resume line for {stage}:\n{stderr[-3000:]}"
    return int(found[0][0]), int(found[0][1])


def assert_same_weights(a: Path, b: Path, stage: str) -> None:
    wa, wb = (load_file(d / stage / "model" / "model.safetensors") for d in (a, b))
    assert wa.keys() == wb.keys()
    for name in wa:
        assert torch.equal(wa[name], wb[name]), name


def assert_order_continues(whole: Path, cut: Path, stage: str, resumed: list[int]) -> None:
    """The ids the interrupted-then-resumed run consumed, step by step, are the uninterrupted run's;
    process k (0: the first, k: the k-th --resume) wrote exactly the steps from resumed[k-1] + 1 on."""
    name, counter, ids = RECORDS[stage]
    a, b = lines(whole / stage / name), lines(cut / stage / name)
    assert a and [line[counter] for line in a] == list(range(1, len(a) + 1))
    assert [(line[counter], line[ids]) for line in b] == [(line[counter], line[ids]) for line in a]
    assert [line["attempt"] for line in b] == [sum(n > s for s in resumed) for n in range(1, len(a) + 1)]
    assert {line["attempt"] for line in a} == {0}


def kill_then_resume(run_args: list[str], stage: str, kill_when, tmp_path: Path, tmp_path_factory) -> tuple[Path, int, str]:
    """Start the run, SIGKILL it once `kill_when(run_dir)` holds, `--resume` it, and check it against
    the uninterrupted run: weights, the resume line, the data order. Returns the run directory, the
    step or iteration the resume continued from, and the resume's stderr."""
    whole, cut = uninterrupted(run_args, tmp_path_factory), tmp_path / "cut"
    proc = start(run_args, cut)
    wait_for(lambda: kill_when(cut), proc, "the moment to kill")
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (cut / stage / "model").exists(), f"the run was killed before {stage} finished"
    checkpoint = torch.load(cut / stage / "checkpoints" / "last.ckpt", weights_only=False)
    at = checkpoint["global_step"] if stage == "sft" else checkpoint["k15_rl"]["iteration"]

    stderr = resume(cut)
    continued, total = resumed_at(stderr, stage)
    assert continued == at > 0
    assert len(lines(cut / stage / RECORDS[stage][0])) == total  # every step once, none past the end
    assert_order_continues(whole, cut, stage, [at])
    assert_same_weights(whole, cut, stage)
    return cut, at, stderr


def test_sft_killed_mid_stage_resumes_bit_for_bit(tmp_path, tmp_path_factory):
    cut, at, stderr = kill_then_resume(SFT_RUN, "sft", lambda d: (d / "sft/checkpoints/step40.ckpt").exists(),
                                       tmp_path, tmp_path_factory)
    assert at in (20, 40)  # the kill can land between writing step40.ckpt and last.ckpt
    assert "pretrain: finished before, skipped" in stderr and "pretrain: resumed" not in stderr
    assert_order_continues(uninterrupted(SFT_RUN, tmp_path_factory), cut, "pretrain", [])  # finished, untouched


def test_rl_killed_mid_stage_resumes_bit_for_bit(tmp_path, tmp_path_factory):
    """With prioritized sampling on and partial rollouts waiting in the buffer."""
    _, at, _ = kill_then_resume(RL_RUN, "rl", lambda d: (d / "rl/checkpoints/iteration000006.ckpt").exists(),
                                tmp_path, tmp_path_factory)
    assert at in (4, 6)  # the kill can land between writing iteration000006.ckpt and last.ckpt


def test_kill_during_a_checkpoint_save_keeps_the_previous_one(tmp_path, tmp_path_factory):
    """SIGKILL while last.ckpt is being written (K15_TEST_SAVE_PAUSE_S holds the save between the
    temporary file and the rename): the previous last.ckpt loads, and the run resumes from it."""
    from k15.checkpoint_io import PAUSE, AtomicCheckpointIO

    def mid_save(run_dir: Path) -> bool:  # step 40's last.ckpt on its way: step40.ckpt is written first
        ckpts = run_dir / "sft" / "checkpoints"
        return (ckpts / "step40.ckpt").exists() and (ckpts / ".last.ckpt.tmp").exists()

    whole, cut = uninterrupted(SFT_RUN, tmp_path_factory), tmp_path / "cut"
    proc = start(SFT_RUN, cut, {**ENV, PAUSE: "1"})
    wait_for(lambda: mid_save(cut), proc, "a save of last.ckpt after step40.ckpt")
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    ckpts = cut / "sft" / "checkpoints"
    assert (ckpts / ".last.ckpt.tmp").exists(), "killed after the rename: the test did not hit the save"
    assert AtomicCheckpointIO().load_checkpoint(ckpts / "last.ckpt")["global_step"] == 20  # the previous one, whole
    assert len(lines(cut / "sft" / "data_order.jsonl")) == 40  # steps 21-40 were trained, then lost with the save

    stderr = resume(cut)
    assert resumed_at(stderr, "sft") == (20, 160)
    assert_order_continues(whole, cut, "sft", [20])
    assert_same_weights(whole, cut, "sft")


def test_resume_of_a_missing_or_corrupt_run_is_a_clear_error(tmp_path):
    done = subprocess.run(command("--resume", str(tmp_path)), env=ENV, capture_output=True, text=True)
    assert done.returncode == 2 and "no config.yaml" in done.stderr and "Traceback" not in done.stderr


def test_truncated_checkpoint_names_the_file(tmp_path):
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
