"""Checkpoints every N iterations, for stages whose step counter is not Lightning's `global_step`
(RL with manual optimization counts iterations). Writes are atomic through the trainer's
AtomicCheckpointIO plugin (k15.checkpoint_io).
"""

from __future__ import annotations

from pathlib import Path

import lightning as L


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
