"""TensorBoard histograms of the prompt sampler: per-prompt success rates and sampling weights.

Scalars of the sampler (curriculum phase, weight spread, ...) go out with every iteration's
metrics; histograms cost more, so they are written every N iterations (and after the first).
"""

from __future__ import annotations

import lightning as L


class SamplerHistograms(L.Callback):
    def __init__(self, every_n_iterations: int):
        self.every_n = every_n_iterations

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        iteration = pl_module.iteration  # already counts the iteration that just ended
        experiment = getattr(trainer.logger, "experiment", None)
        if not self.every_n or experiment is None or not (iteration % self.every_n == 0 or iteration == 1):
            return
        for name, values in pl_module.sampler.histograms().items():
            experiment.add_histogram(name, values, iteration)
