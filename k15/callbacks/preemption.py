"""Preemption: SIGTERM, or SIGUSR1 (what SLURM sends ahead of a kill), stops a run at the next safe
point with a checkpoint and a non-zero exit status; `python -m experiments.run --resume RUN_DIR`
continues it bit for bit.

    1. `catch_signals()` (around the whole pipeline) turns both signals into a request: the handler
       only notes the signal, since it may run between any two bytecodes (no printing, no files).
    2. During training, k15.callbacks.checkpoint.PreemptionCheckpoint checks the request after each
       optimizer step (pretraining, SFT, vision stages) or RL iteration, writes
       RUN/<stage>/checkpoints/last.ckpt, prints one line and raises `Preempted`.
    3. Between stages the pipeline checks it too (`stop_if_requested`): a signal that arrives during
       an export or evaluation ends the run as soon as that stage is done and in summary.json.
    4. `Preempted` is a SystemExit whose code is 128 + the signal number, the status a shell reports
       for a process killed by that signal (143 for SIGTERM, 138 for SIGUSR1): SLURM, `timeout` and
       job scripts see a failure, never a finished run. The one line names the stage, the step or
       iteration, the checkpoint and the `--resume` command.

Lightning's own handlers (its SignalConnector) would end the run after the current batch with
status 0 and no checkpoint on SIGTERM, and, under SLURM with auto-requeue, write an hpc_ckpt from
inside the SIGUSR1 handler (not at a safe point) and requeue the job. PreemptionCheckpoint takes both
signals back when training starts; Lightning restores the handlers it found when fit ends. k15 does
not requeue: the job script resubmits with `--resume`.

This module needs only the standard library, so the command line can import it cheaply.
"""

from __future__ import annotations

import signal
import sys
import threading
from contextlib import contextmanager
from pathlib import Path

SIGNALS = (signal.SIGTERM, signal.SIGUSR1)
_received: list[int] = []  # signals noted since catch_signals() began; the first one decides


def resume_command(run_dir: Path) -> str:
    """The command that continues the run in `run_dir` from its last checkpoint."""
    return f"python -m experiments.run --resume {run_dir}"


def exit_status(signum: int) -> int:
    """128 + signal number, as a shell reports a process killed by that signal."""
    return 128 + int(signum)


class Preempted(SystemExit):
    """A run stopped by a signal at a safe point. `code` is the exit status; `record` goes to summary.json.

    `at`: where it stopped ("sft step 57", "rl iteration 6", "the end of stage sft"); `checkpoint`:
    what it saved there (None between stages, where summary.json holds the finished stage)."""

    def __init__(self, signum: int, run_dir: Path, stage: str, at: str, checkpoint: Path | None = None):
        super().__init__(exit_status(signum))
        name = signal.Signals(signum).name
        self.record = {"signal": name, "stage": stage, "at": at, "checkpoint": str(checkpoint) if checkpoint else None}
        saved = f"saved {checkpoint}" if checkpoint else f"stage {stage} finished"
        self.message = f"preempted: {name} at {at}; {saved}; continue with: {resume_command(run_dir)} (exit status {self.code})"

    def __str__(self) -> str:
        return self.message

    def say(self) -> None:
        """The one line, from one process of a multi-process run."""
        from k15.distributed import is_rank_zero

        if is_rank_zero():
            print(self.message, file=sys.stderr, flush=True)


def _note(signum: int, frame) -> None:
    note(signum)


def note(signum: int) -> None:
    """Record a stop request (the handler's work; also for a signal another handler caught first)."""
    _received.append(signum)


def requested() -> int | None:
    """The signal that asked this process to stop, if one did."""
    return _received[0] if _received else None


def stopping(stop: Preempted) -> Preempted:
    """Say the line and forget the request (it is answered), ready to `raise`."""
    _received.clear()
    stop.say()
    return stop


def take_signals() -> dict:
    """Point SIGTERM and SIGUSR1 at `_note`; returns the handlers they had (nothing off the main thread,
    where Python cannot set handlers)."""
    if threading.current_thread() is not threading.main_thread():
        return {}
    previous = {s: signal.getsignal(s) for s in SIGNALS}
    for s in SIGNALS:
        signal.signal(s, _note)
    return previous


@contextmanager
def catch_signals():
    """Note SIGTERM / SIGUSR1 while the block runs (a fresh request each time), then put the old handlers back."""
    _received.clear()
    previous = take_signals()
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler if handler is not None else signal.SIG_DFL)


def stop_if_requested(run_dir: Path, stage: str) -> None:
    """After `stage` finished: raise Preempted if any process was signalled (all of them agree)."""
    from k15.distributed import all_gather_objects

    signals = [s for s in all_gather_objects(requested()) if s is not None]
    if signals:
        raise stopping(Preempted(signals[0], run_dir, stage, f"the end of stage {stage}"))
