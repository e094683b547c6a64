"""Per-prompt success rates s_i, tracked online for prioritized sampling (paper §2.3.4).

RL samples each prompt k times per draw, so every draw yields an observed success rate (the share
of its k responses the verifier accepted). The paper leaves the estimator open; two are offered:

- ``ema``:    s <- decay * s + (1 - decay) * observed    (forgets: follows a policy that improves)
- ``counts``: s = mean of all observations, with the initial value counted as one of them

The initial value is the prompt's curation pass rate when the prompt set has one (paper §2.1: an
SFT model's pass rate over 10 samples), else a configured constant.
"""

from __future__ import annotations

from typing import Literal

import torch

Tracking = Literal["ema", "counts"]


class SuccessTracker:
    def __init__(self, initial: list[float | None], default: float, mode: Tracking = "ema", decay: float = 0.7):
        if mode not in ("ema", "counts"):
            raise ValueError(f"unknown success tracking {mode!r}; expected 'ema' or 'counts'")
        self.mode, self.decay = mode, decay
        self.rates = torch.tensor([default if s is None else s for s in initial], dtype=torch.float64)
        self.counts = torch.zeros(len(initial), dtype=torch.long)  # observations so far

    def update(self, indices: list[int], successes: list[float]) -> None:
        """One observation per (index, success); a prompt listed twice is updated twice, in order."""
        for i, s in zip(indices, successes, strict=True):
            r, c = float(self.rates[i]), int(self.counts[i])
            if self.mode == "ema":
                self.rates[i] = self.decay * r + (1.0 - self.decay) * s
            else:
                self.rates[i] = (r * (c + 1) + s) / (c + 2)
            self.counts[i] = c + 1

    def state_dict(self) -> dict:
        return {"rates": self.rates.clone(), "counts": self.counts.clone()}

    def load_state_dict(self, state: dict) -> None:
        rates, counts = torch.as_tensor(state["rates"], dtype=torch.float64), torch.as_tensor(state["counts"], dtype=torch.long)
        if rates.shape != self.rates.shape:
            raise ValueError(f"checkpoint tracks {rates.numel()} prompts, this prompt set has {self.rates.numel()}")
        self.rates, self.counts = rates.clone(), counts.clone()
