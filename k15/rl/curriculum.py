"""Curriculum by difficulty labels (paper §2.3.4): which prompts may be drawn at iteration t.

A curriculum is a mask over the prompt set; the sampler multiplies it with the priority weights, so
curriculum and prioritized sampling compose as the paper uses them ("in addition to curriculum
sampling, we use a prioritized sampling strategy").

- `HardAfter`, the paper's form (its Fig. 9 ablation): the whole set until iteration N, then only
  prompts with difficulty >= a threshold (by default the set's median label).
- `EasyToHard`, a gradual schedule: at iteration t the easiest share
  c(t) = start + (1 - start) * min(1, t / iterations) of the set is drawable (ties in difficulty
  included), so harder levels open up one after another until the whole set is in play.

Each keeps at least `per_draw` prompts drawable, so an iteration can always draw distinct prompts.
"""

from __future__ import annotations

import math
from typing import Protocol

import torch

from k15.errors import ConfigError


class Curriculum(Protocol):
    def mask(self, iteration: int) -> torch.Tensor:  # bool [num_prompts]: drawable now
        ...

    def stats(self, iteration: int) -> dict[str, float]:
        ...


class AllPrompts:
    def __init__(self, num_prompts: int):
        self.all = torch.ones(num_prompts, dtype=torch.bool)

    def mask(self, iteration: int) -> torch.Tensor:
        return self.all

    def stats(self, iteration: int) -> dict[str, float]:
        return {}


class HardAfter:
    def __init__(self, difficulties: torch.Tensor, from_iteration: int, min_difficulty: int | None, per_draw: int):
        if min_difficulty is None:  # the harder half of the set: at or above the median label
            min_difficulty = int(difficulties.sort().values[len(difficulties) // 2])
        self.difficulties, self.from_iteration = difficulties, from_iteration
        self.all = torch.ones_like(difficulties, dtype=torch.bool)
        self.hard = difficulties >= min_difficulty
        if int(self.hard.sum()) < per_draw:
            raise ConfigError(
                f"rl.sampling.hard_min_difficulty={min_difficulty}: only {int(self.hard.sum())} prompts are that hard, "
                f"fewer than rl.prompts_per_iteration={per_draw}"
            )

    def mask(self, iteration: int) -> torch.Tensor:
        return self.hard if iteration >= self.from_iteration else self.all

    def stats(self, iteration: int) -> dict[str, float]:
        mask = self.mask(iteration)
        return {
            "sampler/curriculum_phase": float(iteration >= self.from_iteration),
            "sampler/curriculum_min_difficulty": float(self.difficulties[mask].min()),  # easiest drawable label
            "sampler/eligible_frac": float(mask.float().mean()),
        }


class EasyToHard:
    def __init__(self, difficulties: torch.Tensor, start: float, iterations: int, per_draw: int):
        if not 0.0 < start <= 1.0 or iterations <= 0:
            raise ValueError(f"gradual curriculum needs start in (0, 1] and iterations > 0, got {start}, {iterations}")
        self.difficulties, self.start, self.iterations, self.per_draw = difficulties, start, iterations, per_draw
        self.ascending = difficulties.sort().values

    def progress(self, iteration: int) -> float:
        return min(1.0, iteration / self.iterations)

    def max_difficulty(self, iteration: int) -> int:
        share = self.start + (1.0 - self.start) * self.progress(iteration)
        n = len(self.ascending)
        count = min(n, max(self.per_draw, math.ceil(share * n - 1e-9)))
        return int(self.ascending[count - 1])

    def mask(self, iteration: int) -> torch.Tensor:
        return self.difficulties <= self.max_difficulty(iteration)

    def stats(self, iteration: int) -> dict[str, float]:
        return {
            "sampler/curriculum_phase": self.progress(iteration),
            "sampler/curriculum_max_difficulty": float(self.max_difficulty(iteration)),
            "sampler/eligible_frac": float(self.mask(iteration).float().mean()),
        }
