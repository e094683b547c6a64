"""Which prompts an RL iteration trains on (paper §2.3.4).

Every sampler has the same small interface, which the RLModule uses once per iteration:

    draw(n, iteration) -> prompt indices      update(indices, successes)   after scoring
    stats() -> {name: float}                  histograms() -> {name: tensor}   for TensorBoard
    state_dict() / load_state_dict()          everything a resume needs (RNG, success rates)

- `UniformSampler` (the default) walks a shuffled order of the prompt set, reshuffling at each pass,
  so every prompt is seen once per pass.
- `WeightedSampler` draws n distinct prompts, one after another in proportion to the weights of
  those not yet drawn, with weight_i = curriculum_mask_i(t) * ((1 - s_i) + floor) when prioritized
  (the paper's P(i) ∝ 1 - s_i, plus a floor so solved prompts are still revisited), or
  curriculum_mask_i(t) alone (uniform over the curriculum's prompts). The success rates s_i are
  tracked either way, for the logs.
"""

from __future__ import annotations

import random
from typing import Protocol

import torch

from k15.config import SamplingConfig
from k15.data.prompts import PromptRecord
from k15.errors import ConfigError
from k15.rl.curriculum import AllPrompts, Curriculum, EasyToHard, HardAfter
from k15.rl.success import SuccessTracker

SEED_OFFSET = 7919  # the rollout generator uses the run seed itself: keep the two streams apart


class Sampler(Protocol):
    def draw(self, n: int, iteration: int = 0) -> list[int]: ...
    def update(self, indices: list[int], successes: list[float]) -> None: ...
    def stats(self) -> dict[str, float]: ...
    def histograms(self) -> dict[str, torch.Tensor]: ...
    def state_dict(self) -> dict: ...
    def load_state_dict(self, state: dict) -> None: ...


class UniformSampler:
    def __init__(self, num_prompts: int, seed: int):
        if num_prompts <= 0:
            raise ValueError("the prompt set is empty")
        self.num_prompts = num_prompts
        self.rng = random.Random(seed)
        self.order: list[int] = []
        self.pos = 0

    def draw(self, n: int, iteration: int = 0) -> list[int]:
        out = []
        while len(out) < n:
            if self.pos >= len(self.order):
                self.order = list(range(self.num_prompts))
                self.rng.shuffle(self.order)
                self.pos = 0
            take = min(n - len(out), len(self.order) - self.pos)
            out += self.order[self.pos : self.pos + take]
            self.pos += take
        return out

    def update(self, indices: list[int], successes: list[float]) -> None:
        pass  # uniform: outcomes do not change what comes next

    def stats(self) -> dict[str, float]:
        return {}

    def histograms(self) -> dict[str, torch.Tensor]:
        return {}

    def state_dict(self) -> dict:
        return {"rng": self.rng.getstate(), "order": list(self.order), "pos": self.pos}

    def load_state_dict(self, state: dict) -> None:
        self.rng.setstate(_as_tuple(state["rng"]))
        self.order, self.pos = list(state["order"]), int(state["pos"])


class WeightedSampler:
    def __init__(
        self, difficulties: torch.Tensor, curriculum: Curriculum, tracker: SuccessTracker,
        prioritized: bool, floor: float, seed: int,
    ):
        self.difficulties, self.curriculum, self.tracker = difficulties.double(), curriculum, tracker
        self.prioritized, self.floor = prioritized, floor
        self.generator = torch.Generator().manual_seed(seed + SEED_OFFSET)
        self.iteration = 0  # of the latest draw
        self.drawn: list[int] = []
        self.drawn_success = 0.0  # mean s_i of the latest draw, at draw time

    def probabilities(self, iteration: int) -> torch.Tensor:
        weights = self.curriculum.mask(iteration).double()
        if self.prioritized:
            weights = weights * ((1.0 - self.tracker.rates) + self.floor)
        return weights / weights.sum()

    def draw(self, n: int, iteration: int = 0) -> list[int]:
        self.iteration = iteration
        probs = self.probabilities(iteration)
        self.drawn = torch.multinomial(probs, n, replacement=False, generator=self.generator).tolist() if n else []
        self.drawn_success = float(self.tracker.rates[self.drawn].mean()) if self.drawn else 0.0
        return self.drawn

    def update(self, indices: list[int], successes: list[float]) -> None:
        self.tracker.update(indices, successes)

    def stats(self) -> dict[str, float]:
        probs = self.probabilities(self.iteration)
        eligible = probs[probs > 0]
        relative = eligible * eligible.numel()  # 1 = the uniform share among drawable prompts
        entropy = float(-(eligible * eligible.log()).sum())
        out = {
            "sampler/success_mean": float(self.tracker.rates.mean()),
            "sampler/seen_frac": float((self.tracker.counts > 0).double().mean()),
            "sampler/weight_max": float(relative.max()),
            "sampler/weight_min": float(relative.min()),
            "sampler/effective_frac": float(torch.tensor(entropy).exp()) / eligible.numel(),  # 1 = uniform
        }
        if self.drawn:
            out["sampler/drawn_success_mean"] = self.drawn_success
            if bool((self.difficulties >= 0).all()):
                out["sampler/drawn_difficulty_mean"] = float(self.difficulties[self.drawn].float().mean())
        out.update(self.curriculum.stats(self.iteration))
        return out

    def histograms(self) -> dict[str, torch.Tensor]:
        probs = self.probabilities(self.iteration)
        eligible = probs[probs > 0]
        return {"sampler/success_rate": self.tracker.rates.float(), "sampler/weights": (eligible * eligible.numel()).float()}

    def state_dict(self) -> dict:
        return {
            "generator": self.generator.get_state(), "tracker": self.tracker.state_dict(),
            "iteration": self.iteration, "drawn": list(self.drawn), "drawn_success": self.drawn_success,
        }

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])
        self.tracker.load_state_dict(state["tracker"])
        self.iteration, self.drawn, self.drawn_success = int(state["iteration"]), list(state["drawn"]), float(state["drawn_success"])


def make_sampler(records: list[PromptRecord], cfg: SamplingConfig, per_draw: int, seed: int) -> Sampler:
    """The sampler `rl.sampling` asks for; `per_draw` is the most prompts one iteration draws."""
    if cfg.curriculum == "none" and not cfg.prioritized:
        return UniformSampler(len(records), seed)
    if len(records) < per_draw:
        raise ConfigError(
            f"rl.sampling: the prompt set has {len(records)} prompts, fewer than rl.prompts_per_iteration={per_draw} "
            "(curriculum and prioritized sampling draw distinct prompts)"
        )
    unlabelled = sum(r.difficulty is None for r in records)
    if cfg.curriculum != "none" and unlabelled:
        raise ConfigError(
            f"rl.sampling.curriculum={cfg.curriculum} orders prompts by difficulty, but {unlabelled} of {len(records)} "
            "prompts have none: map a difficulty field (data.difficulty_field), or use rl.sampling.prioritized=true, "
            "which needs only the success rates it tracks"
        )
    # -1 stands for "no label": only the curricula read the labels, and they refuse unlabelled sets (above)
    difficulties = torch.tensor([-1 if r.difficulty is None else r.difficulty for r in records], dtype=torch.long)
    if cfg.curriculum == "paper":
        curriculum: Curriculum = HardAfter(difficulties, cfg.hard_from_iteration, cfg.hard_min_difficulty, per_draw)
    elif cfg.curriculum == "gradual":
        curriculum = EasyToHard(difficulties, cfg.gradual_start, cfg.gradual_iterations, per_draw)
    else:
        curriculum = AllPrompts(len(records))
    tracker = SuccessTracker([r.pass_rate for r in records], cfg.initial_success, cfg.success_tracking, cfg.ema_decay)
    return WeightedSampler(difficulties, curriculum, tracker, cfg.prioritized, cfg.floor, seed)


def _as_tuple(value):
    """random's state is nested tuples; a checkpoint round trip may hand back lists."""
    return tuple(_as_tuple(v) for v in value) if isinstance(value, (list, tuple)) else value
