"""The length penalty's schedule (paper §2.3.3): plain RL first, then a constant penalty.

"Length penalty may slow down training during the initial phases", so the paper warms up without
it and then keeps a constant weight. Before each iteration this callback sets the module's
`length_penalty_weight`: 0 before `warmup_iterations`, `weight` from then on. It is a function of
the iteration alone, so a resumed run needs no state for it.
"""

from __future__ import annotations

import lightning as L


class LengthPenaltySchedule(L.Callback):
    def __init__(self, weight: float, warmup_iterations: int):
        self.weight, self.warmup_iterations = weight, warmup_iterations

    def weight_at(self, iteration: int) -> float:
        return self.weight if iteration >= self.warmup_iterations else 0.0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        pl_module.length_penalty_weight = self.weight_at(pl_module.iteration)
