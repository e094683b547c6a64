"""SIGTERM and SIGUSR1 (SLURM's warning before a kill) stop a run at the next safe point: a checkpoint,
one line saying where and how to continue, exit status 128 + signal (143, 138), "preempted" in
summary.json; `--resume` then ends bit for bit where an uninterrupted run ends, with the data order
of k15.callbacks.data_order continuing exactly (nothing replayed, nothing skipped)."""

import json
import os
import re
import signal
import subprocess
from pathlib import Path

import pytest
import torch

from tests.reliability.test_resume import (
    RECORDS, RL_RUN, SFT_RUN, UNITS, assert_order_continues, assert_same_weights, launch, lines, resume, resumed_at,
    start, uninterrupted, wait_for,
)


def preempt(proc: subprocess.Popen, log: Path, run_dir: Path, stage: str, after: int, signum: int) -> int:
    """Send `signum` to `proc` once `stage` has recorded `after` steps (iterations); the run must stop
    at the next safe point as documented. Returns the step (iteration) it stopped at."""
    record = run_dir / stage / RECORDS[stage][0]
    written = lambda: record.read_text().count("\n") if record.is_file() else 0  # noqa: E731 (whole lines only)
    wait_for(lambda: written() >= after, proc, f"{after} {UNITS[stage]}s of {stage}")
    proc.send_signal(signum)
    assert proc.wait(timeout=180) == 128 + signum  # 143 for SIGTERM, 138 for SIGUSR1

    stderr = log.read_text()
    name, unit = signal.Signals(signum).name, UNITS[stage]
    found = re.findall(rf"^preempted: {name} at {stage} {unit} (\d+); saved (\S+); continue with: "
                       rf"python -m experiments\.run --resume (\S+) \(exit status {128 + signum}\)$", stderr, re.M)
    assert len(found) == 1, stderr[-3000:]
    at, path, run = int(found[0][0]), Path(found[0][1]), Path(found[0][2])
    assert at >= after and path == run_dir / stage / "checkpoints" / "last.ckpt" and run == run_dir
    saved = torch.load(path, weights_only=False)
    assert (saved["global_step"] if unit == "step" else saved["k15_rl"]["iteration"]) == at
    assert len(lines(record)) == at  # stopped at the safe point: not one step further
    assert not (run_dir / stage / "model").exists()
    preempted = json.loads((run_dir / "summary.json").read_text())["preempted"]
    assert preempted[-1] == {"signal": name, "stage": stage, "at": f"{stage} {unit} {at}", "checkpoint": str(path)}
    return at


def test_sft_sigterm_then_sigusr1_each_saves_exits_nonzero_and_resumes_bit_for_bit(tmp_path, tmp_path_factory):
    """SIGTERM mid-SFT, `--resume`; SIGUSR1 to the resumed process, `--resume` again: the weights and the
    order of the examples equal an uninterrupted run's, and each process trained only its own steps."""
    whole, cut = uninterrupted(SFT_RUN, tmp_path_factory), tmp_path / "cut"
    first = preempt(start(SFT_RUN, cut), cut.with_suffix(".stderr"), cut, "sft", 50, signal.SIGTERM)
    log = cut.with_suffix(".resumed.stderr")
    second = preempt(launch(["--resume", str(cut)], log), log, cut, "sft", first + 30, signal.SIGUSR1)
    assert resumed_at(log.read_text(), "sft") == (first, 160)

    stderr = resume(cut)
    assert resumed_at(stderr, "sft") == (second, 160)
    assert_order_continues(whole, cut, "sft", [first, second])
    assert_same_weights(whole, cut, "sft")
    # ModelCheckpoint went on writing last.ckpt after the resumes (not a last-v1.ckpt beside it)
    assert sorted(p.name for p in (cut / "sft" / "checkpoints").glob("last*")) == ["last.ckpt"]
    summary = json.loads((cut / "summary.json").read_text())
    assert [p["signal"] for p in summary["preempted"]] == ["SIGTERM", "SIGUSR1"] and "sft" in summary["stages"]


def test_rl_sigterm_with_partial_rollouts_in_the_buffer_resumes_bit_for_bit(tmp_path, tmp_path_factory):
    whole, cut = uninterrupted(RL_RUN, tmp_path_factory), tmp_path / "cut"
    at = preempt(start(RL_RUN, cut), cut.with_suffix(".stderr"), cut, "rl", 5, signal.SIGTERM)
    state = torch.load(cut / "rl" / "checkpoints" / "last.ckpt", weights_only=False)["k15_rl"]
    waiting = [m for g in state["rollouts"]["buffer"]["groups"] for m in g["members"] if m["finish_reason"] is None]
    assert waiting and all(m["tokens"] for m in waiting), "unfinished partial rollouts are in the checkpoint"

    stderr = resume(cut)
    assert resumed_at(stderr, "rl") == (at, 14)
    assert_order_continues(whole, cut, "rl", [at])
    assert_same_weights(whole, cut, "rl")


def test_a_signal_between_safe_points_is_noted_and_stops_at_the_next(tmp_path):
    """In-process: the handler only notes the signal; the stage-end check raises Preempted (a SystemExit
    with 128 + signal) naming the stage; the handlers from before come back afterwards."""
    from k15.callbacks.preemption import Preempted, catch_signals, requested, stop_if_requested

    before = signal.getsignal(signal.SIGUSR1)
    with catch_signals():
        stop_if_requested(tmp_path, "pretrain")  # nothing asked: carries on
        os.kill(os.getpid(), signal.SIGUSR1)
        assert requested() == signal.SIGUSR1
        with pytest.raises(Preempted) as stop:
            stop_if_requested(tmp_path, "eval")
        assert requested() is None  # answered
    assert signal.getsignal(signal.SIGUSR1) == before
    assert isinstance(stop.value, SystemExit) and stop.value.code == 138
    assert stop.value.record == {"signal": "SIGUSR1", "stage": "eval", "at": "the end of stage eval", "checkpoint": None}
    assert f"--resume {tmp_path} (exit status 138)" in str(stop.value)
    with catch_signals():
        assert requested() is None  # a new run starts without the old request


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGUSR1])
def test_under_slurm_k15_and_not_lightning_answers_the_signal(signum, tmp_path, monkeypatch):
    """In-process, with the SLURM variables that make Lightning install its auto-requeue handlers (an
    hpc_ckpt written inside the SIGUSR1 handler, `scontrol requeue`; SIGTERM ending fit with status 0):
    PreemptionCheckpoint takes both signals over when training starts, stops at the step after the
    signal with its own checkpoint, and Lightning restores the handlers from before the fit."""
    import lightning as L
    from lightning.fabric.plugins.environments import SLURMEnvironment

    from k15.callbacks.checkpoint import PreemptionCheckpoint
    from k15.callbacks.preemption import Preempted

    for key, value in {"SLURM_NTASKS": "1", "SLURM_JOB_ID": "4242", "SLURM_JOB_NAME": "k15", "SLURM_PROCID": "0",
                       "SLURM_LOCALID": "0", "SLURM_NODEID": "0"}.items():
        monkeypatch.setenv(key, value)

    class Tiny(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.layer = torch.nn.Linear(4, 1)

        def training_step(self, batch, batch_idx):
            return self.layer(batch).sum()

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    class SignalAtStep2(L.Callback):  # runs before PreemptionCheckpoint in the same hook
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            if trainer.global_step == 2:
                os.kill(os.getpid(), signum)

    before = signal.getsignal(signum)
    trainer = L.Trainer(max_steps=5, accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
                        enable_checkpointing=False, enable_model_summary=False, default_root_dir=str(tmp_path),
                        callbacks=[SignalAtStep2(), PreemptionCheckpoint(tmp_path, "sft")])
    assert isinstance(trainer._accelerator_connector.cluster_environment, SLURMEnvironment)
    with pytest.raises(Preempted) as stop:
        trainer.fit(Tiny(), torch.utils.data.DataLoader(torch.randn(16, 4), batch_size=2))
    assert stop.value.code == 128 + signum and stop.value.record["at"] == "sft step 2"
    assert torch.load(tmp_path / "sft" / "checkpoints" / "last.ckpt", weights_only=False)["global_step"] == 2
    assert not list(tmp_path.rglob("hpc_ckpt*"))  # Lightning's requeue handler never ran
    assert signal.getsignal(signum) == before
