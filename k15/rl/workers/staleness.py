"""TensorBoard histogram of staleness: per trained group, how many policy versions old the policy that made it was.

`async/staleness_mean` and `_max` go out with every iteration's metrics (k15.rl.workers.loop); the
whole distribution is a histogram, `async/staleness`, written every iteration (a few values each).
"""

from __future__ import annotations

import lightning as L
import torch


class StalenessHistogram(L.Callback):
    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        experiment = getattr(trainer.logger, "experiment", None)
        workers = pl_module.workers
        if experiment is None or workers is None or not workers.ages:
            return
        # the iteration that just ended, as the step of its scalars
        experiment.add_histogram("async/staleness", torch.tensor(workers.ages, dtype=torch.float32), pl_module.iteration)
