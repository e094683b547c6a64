"""The progress bar of a stage, counted in the stage's own unit.

Lightning's TQDMProgressBar counts the batches of one pass over the data and starts again at every
pass (`Epoch 3: 409/409` in an 800-step pretraining), and shows the logger's version, which for k15
is the stage name cut to its last four letters (`v_num=rain`). A k15 stage is a number of optimizer
steps (`max_steps`: pretraining, SFT, DPO, the vision stages) or of RL iterations (max_steps=-1 and
one pass over a loader that yields one item per iteration), so this bar counts that, once, from
start to end, and is labelled with the stage:

    pretrain:  25%|██▌       | 200/800 [00:30<01:30, 6.61step/s, loss=1.230]
    rl:  30%|███       | 3/10 [01:12<02:48, 24.1s/iter, reward=0.500, len=31.00]

When stdout is not a terminal (a log file, CI) a live bar is one carriage-return frame per refresh,
hundreds of them piled into one "line". There the bar draws nothing and instead prints whole lines:
one at the start, one every `log_every_s` seconds, and one at the end.
"""

from __future__ import annotations

import sys
import time
from typing import Any

from lightning.pytorch.callbacks import TQDMProgressBar
from lightning.pytorch.callbacks.progress.tqdm_progress import Tqdm

BAR_FORMAT = "{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}<{remaining}, {rate_fmt}{postfix}]"


class _Nowhere:
    """A file that drops what tqdm writes: in log mode the bar keeps its counts and timing, and the
    callback decides when a line is printed."""

    def write(self, s: str) -> int:
        return len(s)

    def flush(self) -> None:
        pass


def _is_terminal(stream) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # no isatty, or closed
        return False


class StageProgressBar(TQDMProgressBar):
    def __init__(self, stage: str, refresh_rate: int = 10, log_every_s: float = 60.0):
        super().__init__(refresh_rate=refresh_rate)
        self.stage = stage
        self.log_every_s = log_every_s
        self._log = None  # the stream whole lines go to when it is not a terminal; None: a live bar
        self._last_line_s = 0.0
        self._last_line_n = -1
        self._first_batch = True

    def counts_steps(self) -> bool:
        """Optimizer steps when the stage has a max_steps, else iterations (one per batch of its one pass)."""
        return self.trainer.max_steps is not None and self.trainer.max_steps > 0

    @property
    def total_train_batches(self) -> int | float:
        # Lightning's: the batches of one pass (or fewer near max_steps). Ours: the whole stage.
        return self.trainer.max_steps if self.counts_steps() else self.trainer.num_training_batches

    def get_metrics(self, trainer, pl_module) -> dict[str, Any]:
        items = super().get_metrics(trainer, pl_module)
        items.pop("v_num", None)  # the logger's version is the stage name, which already labels the bar
        return {k.removeprefix("train/"): v for k, v in items.items()}  # "train/loss" -> "loss"

    def init_train_tqdm(self) -> Tqdm:
        stream = sys.stdout  # where Lightning's bar writes; read now, as pytest and callers swap it
        self._log = None if _is_terminal(stream) else stream
        total = self.total_train_batches
        return Tqdm(
            desc=self.stage,
            total=None if total == float("inf") else total,
            unit="step" if self.counts_steps() else "iter",
            disable=self.is_disabled,
            leave=True,
            dynamic_ncols=self._log is None,
            file=stream if self._log is None else _Nowhere(),
            smoothing=0,  # the rate over the whole stage, not the last few refreshes
            bar_format=BAR_FORMAT,
        )

    def init_sanity_tqdm(self) -> Tqdm:
        return super().init_sanity_tqdm() if _is_terminal(sys.stdout) else Tqdm(disable=True)

    def init_validation_tqdm(self) -> Tqdm:
        # k15's stages do not validate, but a module that does would otherwise put the validation
        # bar's frames into the log: there it is not shown (it is transient anyway).
        return super().init_validation_tqdm() if _is_terminal(sys.stdout) else Tqdm(disable=True)

    def _done(self, trainer, batch_idx: int) -> int:
        """Units finished once batch `batch_idx` has ended (Lightning's batch_idx continues after a resume)."""
        return trainer.global_step if self.counts_steps() else batch_idx + 1

    # ------------------------------------------------------------------------------------ hooks

    def on_train_start(self, trainer, pl_module) -> None:
        self.train_progress_bar = self.init_train_tqdm()
        self._first_batch = True

    def on_train_epoch_start(self, trainer, *_: Any) -> None:
        pass  # one bar for the whole stage: Lightning's starts again at every pass over the data

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx: int) -> None:
        if not self._first_batch:
            return
        self._first_batch = False
        bar = self.train_progress_bar
        # A resumed stage starts where it stopped (batch_idx continues across a resume), and its
        # rate counts only what this run did.
        bar.n = bar.initial = trainer.global_step if self.counts_steps() else batch_idx
        if self._log is None:
            if not bar.disable and bar.n:
                bar.refresh()
        else:
            self._print_line(force=True)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        bar = self.train_progress_bar
        n = self._done(trainer, batch_idx)
        if bar.disable:
            return
        if self._log is None:  # a live bar: redraw every refresh_rate units and at the end
            if self._should_update(n, bar.total):
                bar.n = n
                bar.set_postfix(self.get_metrics(trainer, pl_module), refresh=False)
                bar.refresh()
            return
        bar.n = n
        bar.set_postfix(self.get_metrics(trainer, pl_module), refresh=False)
        self._print_line(force=n == bar.total)

    def on_train_end(self, trainer, pl_module) -> None:
        if self._log is not None and not self.train_progress_bar.disable:
            self._print_line(force=True)  # where the stage stopped, if the last line did not show it
        super().on_train_end(trainer, pl_module)

    def print(self, *args: Any, sep: str = " ", **kwargs: Any) -> None:
        if self._log is not None:  # the bar's own file drops everything in log mode
            print(*args, sep=sep, file=self._log, flush=True)
        else:
            super().print(*args, sep=sep, **kwargs)

    def _print_line(self, force: bool) -> None:
        """Log mode: the bar as one whole line, if `log_every_s` has passed (or `force`) and it moved."""
        bar = self.train_progress_bar
        if self._log is None or bar.disable or bar.n == self._last_line_n:
            return
        now = time.monotonic()
        if force or now - self._last_line_s >= self.log_every_s:
            self._log.write(str(bar) + "\n")
            self._log.flush()
            self._last_line_s, self._last_line_n = now, bar.n
