"""Per-step speed and memory for the token-training modules (pretrain, SFT, VLM): tokens/s, lr, rss.

A module reports the real (non-padding) tokens of its step in `step_tokens`; this callback times the
step and logs `perf/tokens_per_s`, the learning rate, and every 50 steps the process memory.
"""

from __future__ import annotations

import time

import lightning as L

from k15.perf import memory_metrics


class ThroughputLogger(L.Callback):
    def __init__(self, memory_every_n_steps: int = 50):
        self.memory_every_n_steps = memory_every_n_steps
        self._started = 0.0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._started = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        seconds = time.perf_counter() - self._started
        pl_module.log("perf/tokens_per_s", getattr(pl_module, "step_tokens", 0) / max(seconds, 1e-9))
        pl_module.log("lr", trainer.optimizers[0].param_groups[0]["lr"])
        if self.memory_every_n_steps and batch_idx % self.memory_every_n_steps == 0:
            pl_module.log_dict(memory_metrics())
