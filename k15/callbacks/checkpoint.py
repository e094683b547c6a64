"""Checkpoint callbacks: every N RL iterations, on preemption, and the line a resumed stage prints.

- IterationCheckpoint: every N iterations, for stages whose step counter is not Lightning's
  `global_step` (RL with manual optimization counts iterations).
- PreemptionCheckpoint: after SIGTERM / SIGUSR1, saves last.ckpt at the next safe point (after an
  optimizer step or RL iteration) and stops the run (k15.callbacks.preemption). The same save, and a
  line saying where it is, when a StopWithCheckpoint error ends the fit (a dead rollout worker).
- ResumeReport: once Lightning has restored a checkpoint, one line saying where the stage continues.

Writes are atomic through the trainer's AtomicCheckpointIO plugin (k15.checkpoint_io). All three are
called in on_train_batch_end after k15.callbacks.data_order's records (make_trainer orders them), so
a checkpoint counts the batch it was written after.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint

from k15.callbacks.preemption import Preempted, note, requested, resume_command, stopping, take_signals
from k15.distributed import all_gather_objects
from k15.errors import K15Error


class StopWithCheckpoint(K15Error):
    """A one-line failure raised while the module still holds its last finished step's or iteration's
    state (the failed one changed nothing yet, e.g. a rollout worker died): PreemptionCheckpoint saves
    last.ckpt, says where and how to resume, then the error ends the run (exit 2 on the command line).
    Single-process fits only: the save is not coordinated with other ranks."""


def progress(trainer: L.Trainer, pl_module: L.LightningModule, unit: str) -> int:
    """Steps (Lightning's global_step) or the module's own counter (RL: `iteration`) done so far."""
    return trainer.global_step if unit == "step" else int(getattr(pl_module, unit))


class IterationCheckpoint(L.Callback):
    def __init__(self, dirpath: str | Path, every_n: int, counter: str = "iteration"):
        self.dirpath, self.every_n, self.counter = Path(dirpath), every_n, counter

    def save(self, trainer: L.Trainer, name: str) -> Path:
        self.dirpath.mkdir(parents=True, exist_ok=True)
        final = self.dirpath / name
        trainer.save_checkpoint(final)
        return final

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        count = getattr(pl_module, self.counter)
        if self.every_n and count % self.every_n == 0:
            self.save(trainer, f"{self.counter}{count:06d}.ckpt")
            self.save(trainer, "last.ckpt")

    def on_train_end(self, trainer, pl_module) -> None:
        self.save(trainer, "last.ckpt")


class PreemptionCheckpoint(L.Callback):
    """Saves RUN/<stage>/checkpoints/last.ckpt and raises Preempted once a stop was requested.

    `unit`: "step" or the module's counter ("iteration"); `last`: the stage's ModelCheckpoint, whose
    idea of last.ckpt is kept in step (else, after the resume, it would write last-v1.ckpt beside ours).
    """

    def __init__(self, run_dir: Path, stage: str, unit: str = "step", last: ModelCheckpoint | None = None):
        self.run_dir, self.stage, self.unit, self.last = Path(run_dir), stage, unit, last

    def on_train_start(self, trainer, pl_module) -> None:
        # Lightning set its own handlers just before training starts; ours replace them for the
        # fit (see k15.callbacks.preemption) and Lightning puts back the earlier ones when fit ends.
        take_signals()
        connector = getattr(trainer, "_signal_connector", None)
        if connector is not None and connector.received_sigterm:
            # a SIGTERM in the moment Lightning's handler held it (while the loader was built): ours
            # answers it at the first safe point, before Lightning could end the run with status 0
            connector.received_sigterm = False
            note(signal.SIGTERM)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        # On N processes the save is collective: every rank stops at the step any rank was told to,
        # for the signal the first signalled rank got (so all ranks print and exit alike).
        if not trainer.strategy.reduce_boolean_decision(requested() is not None, all=False):
            return
        signum = next(s for s in all_gather_objects(requested()) if s is not None)
        path = self.run_dir / self.stage / "checkpoints" / "last.ckpt"
        written = False
        if self.last is not None:
            # Lightning calls ModelCheckpoint after every other callback; let it write this step's
            # periodic checkpoint (if one is due) before the run stops.
            self.last.on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
            path = Path(self.last.dirpath) / f"{self.last.CHECKPOINT_NAME_LAST}{self.last.FILE_EXTENSION}"
            # it wrote last.ckpt for this very step already: no second full save inside the grace period
            written = (getattr(self.last, "_last_global_step_saved", None) == trainer.global_step
                       and self.last.last_model_path == os.fspath(path))
            self.last.last_model_path = os.fspath(path)  # part of the state saved next
        if not written:
            trainer.save_checkpoint(path)
        at = f"{self.stage} {self.unit} {progress(trainer, pl_module, self.unit)}"
        raise stopping(Preempted(signum, self.run_dir, self.stage, at, path))

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        """On a StopWithCheckpoint: last.ckpt of the last finished step / iteration, and one line before the error's.

        Steps: 1. the path preemption uses (the ModelCheckpoint's last.ckpt, told it is its own);
        2. save (Lightning counts the failed batch as not processed, so a resume runs it again);
        3. say where it stopped, the checkpoint and the `--resume` command."""
        if not isinstance(exception, StopWithCheckpoint):
            return
        path = self.run_dir / self.stage / "checkpoints" / "last.ckpt"
        if self.last is not None:
            path = Path(self.last.dirpath) / f"{self.last.CHECKPOINT_NAME_LAST}{self.last.FILE_EXTENSION}"
            self.last.last_model_path = os.fspath(path)
        trainer.save_checkpoint(path)
        done = progress(trainer, pl_module, self.unit)
        print(f"stopped in {self.stage} after {self.unit} {done}: saved {path}; continue with: {resume_command(self.run_dir)}",
              file=sys.stderr, flush=True)


class ResumeReport(L.Callback):
    """`sft: resumed at step 40 of 160 from PATH`, printed once Lightning restored the checkpoint: when
    training starts, from the restored counters (or at the end of fit, if nothing was left to train)."""

    def __init__(self, stage: str, unit: str = "step"):
        self.stage, self.unit = stage, unit
        self.said = False

    def say(self, trainer: L.Trainer, pl_module: L.LightningModule, rest: str) -> None:
        self.said = True
        if trainer.ckpt_path and trainer.is_global_zero:
            done = progress(trainer, pl_module, self.unit)
            print(f"{self.stage}: resumed at {self.unit} {done}{rest} from {trainer.ckpt_path}", file=sys.stderr, flush=True)

    def on_train_start(self, trainer, pl_module) -> None:
        total = trainer.max_steps if self.unit == "step" else trainer.num_training_batches
        self.say(trainer, pl_module, f" of {total}")

    def on_fit_end(self, trainer, pl_module) -> None:
        if not self.said:  # Lightning skips the training loop of a stage that had already finished
            self.say(trainer, pl_module, " (finished, nothing left to train)")
