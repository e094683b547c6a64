"""Numeric guards: a non-finite loss, reward or gradient skips its update instead of poisoning the weights.

Every skip is counted (and logged by the caller). A run whose updates keep failing is broken, not
unlucky: after `limit` non-finite updates in a row it stops with one line saying where.
"""

from __future__ import annotations

import torch

from k15.errors import K15Error


class NonFiniteError(K15Error):
    """Too many non-finite updates in a row."""


class NonFiniteGuard:
    def __init__(self, limit: int, where: str):
        self.limit, self.where = limit, where
        self.skipped = 0  # all skips so far
        self.in_a_row = 0

    def ok(self, *values: torch.Tensor | float, step: int | None = None) -> bool:
        """True when every value is finite; otherwise count the skip, and stop the run past the limit."""
        finite = all(bool(torch.isfinite(torch.as_tensor(v)).all()) for v in values)
        if finite:
            self.in_a_row = 0
            return True
        self.skipped += 1
        self.in_a_row += 1
        if self.limit and self.in_a_row >= self.limit:
            at = f" at step {step}" if step is not None else ""
            raise NonFiniteError(
                f"{self.where}: {self.in_a_row} non-finite updates in a row{at} (NaN/inf loss, reward or gradient); "
                f"stopping (trainer.max_nonfinite_in_a_row={self.limit}). Lower the learning rate or check the data."
            )
        return False

    def state_dict(self) -> dict:
        return {"skipped": self.skipped, "in_a_row": self.in_a_row}

    def load_state_dict(self, state: dict) -> None:
        self.skipped, self.in_a_row = state["skipped"], state["in_a_row"]
