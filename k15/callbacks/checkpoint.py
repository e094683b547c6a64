"""Checkpoints every N iterations, written atomically (to a temporary name, then renamed).

A run killed while saving leaves the previous checkpoint intact. Used by stages whose step counter
is not Lightning's `global_step` (RL with manual optimization counts iterations).
"""

from __future__ import annotations

import os
from pathlib import Path

import lightning as L


class IterationCheckpoint(L.Callback):
    def __init__(self, dirpath: str | Path, every_n: int, counter: str = "iteration"):
        self.dirpath, self.every_n, self.counter = Path(dirpath), every_n, counter

    def save(self, trainer: L.Trainer, name: str) -> Path:
        self.dirpath.mkdir(parents=True, exist_ok=True)
        final = self.dirpath / name
        tmp = self.dirpath / f".{name}.tmp"
        trainer.save_checkpoint(tmp)
        if trainer.is_global_zero:
            os.replace(tmp, final)
        return final

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        count = getattr(pl_module, self.counter)
        if self.every_n and count % self.every_n == 0:
            self.save(trainer, f"{self.counter}{count:06d}.ckpt")
            self.save(trainer, "last.ckpt")

    def on_train_end(self, trainer, pl_module) -> None:
        self.save(trainer, "last.ckpt")
