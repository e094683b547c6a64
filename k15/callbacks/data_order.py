"""What each training step consumed, one JSON line per step: a run's data order, to read afterwards.

    RUN/rl/drawn.jsonl  (RL and long2short's l2s_rl; always, a line is a few dozen bytes)
        {"iteration": 3, "prompts": ["4+2-1=", ...], "attempt": 0}
        the ids of the prompts the sampler drew in RL iteration 3 (counted from 1, as TensorBoard's
        step). A partial rollout continued from the replay buffer is not drawn again: its prompt is
        in the line of the iteration that first drew it.
    RUN/<stage>/data_order.jsonl  (pretraining, SFT; with trainer.record_data_order=true)
        {"step": 12, "examples": [431, 7, ...], "attempt": 0}
        the indices of the examples that step 12 trained on, in batch order, into the stage's example
        list (SFT: the examples that fit the context, in file or generator order; pretraining: the
        packed rows). On N processes rank r writes its share of each batch to data_order.rank<r>.jsonl.
        A step skipped for a NaN loss keeps its batch's line (the next line has the same step).

`attempt` is 0 in the process that started the stage and one more with each `--resume`. A resumed
stage first cuts its file back to the lines its checkpoint counted (a killed process may have written
some past its last checkpoint), so the file lists exactly what the run trained on, in order, nothing
repeated or missing; two runs' files show where their data diverged.

Cost: one short line written and flushed per step. A stage whose batches carry no example indices
(its loader is not k15.data.resumable's) writes no data_order file.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import lightning as L


class _StepRecord(L.Callback):
    """One JSON line per training batch; the number written so far travels in the checkpoint."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.lines = 0  # batches recorded in this stage, by every attempt
        self.attempt = 0
        self._restored: dict | None = None
        self._file = None

    def entry(self, trainer, pl_module, batch) -> dict | None:
        raise NotImplementedError

    def writes(self, trainer) -> bool:
        return trainer.is_global_zero

    def state_dict(self) -> dict:
        return {"lines": self.lines, "attempt": self.attempt}

    def load_state_dict(self, state: dict) -> None:
        self._restored = dict(state)

    def on_train_start(self, trainer, pl_module) -> None:
        """Continue the checkpoint's count: keep the lines it had seen, drop any a killed process wrote
        after it; a stage started afresh starts an empty file."""
        if self._restored is None and not trainer.ckpt_path:
            self.lines, self.attempt = 0, 0
            if self.writes(trainer):
                self.path.unlink(missing_ok=True)
            return
        old = self.path.read_text().splitlines(keepends=True) if self.path.is_file() else []
        if self._restored is None:  # a checkpoint from before this record existed: keep what is there
            self.lines, self.attempt = len(old), 1
            return
        self.lines, self.attempt = int(self._restored["lines"]), int(self._restored["attempt"]) + 1
        if self.writes(trainer) and len(old) > self.lines:
            tmp = self.path.with_name(f".{self.path.name}.tmp")
            tmp.write_text("".join(old[: self.lines]))
            os.replace(tmp, self.path)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        entry = self.entry(trainer, pl_module, batch)
        if entry is None:
            return
        self.lines += 1
        if self.writes(trainer):
            if self._file is None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._file = self.path.open("a")
            self._file.write(json.dumps({**entry, "attempt": self.attempt}) + "\n")
            self._file.flush()  # a killed run keeps every line it trained on

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def on_exception(self, trainer, pl_module, exception) -> None:
        self.close()

    def teardown(self, trainer, pl_module, stage) -> None:
        self.close()


class DrawnPrompts(_StepRecord):
    """RUN/<stage>/drawn.jsonl: the prompt ids an RL module drew each iteration (its `drawn` indices)."""

    def entry(self, trainer, pl_module, batch) -> dict:
        return {"iteration": int(pl_module.iteration), "prompts": [pl_module.prompts[i].id for i in pl_module.drawn]}


class ExampleOrder(_StepRecord):
    """RUN/<stage>/data_order.jsonl: the example indices of each batch (`example_ids`, put there by
    k15.data.resumable when this callback is on the trainer)."""

    def on_train_start(self, trainer, pl_module) -> None:
        if trainer.world_size > 1:  # each rank reads its own share of a batch
            self.path = self.path.with_name(f"{self.path.stem}.rank{trainer.global_rank}{self.path.suffix}")
        super().on_train_start(trainer, pl_module)

    def writes(self, trainer) -> bool:
        return True

    def entry(self, trainer, pl_module, batch) -> dict | None:
        ids = batch.get("example_ids") if isinstance(batch, dict) else None
        return None if ids is None else {"step": trainer.global_step, "examples": list(ids)}


def records_examples(trainer) -> bool:
    """Whether the trainer records example indices, so its loader must hand them over."""
    return trainer is not None and any(isinstance(c, ExampleOrder) for c in trainer.callbacks)
