"""Which prompts an RL iteration trains on (paper §2.3.4).

Every sampler has the same small interface, which the RLModule uses once per iteration:

    draw(n, iteration) -> prompt indices      update(indices, successes)   after scoring
    stats() -> {name: float}                  histograms() -> {name: tensor}   for TensorBoard
    state_dict() / load_state_dict()          everything a resume needs (RNG, success rates)

- `UniformSampler` (the default) walks a shuffled order of the prompt set, reshuffling at each pass,
  so every prompt is seen once per pass.
- `WeightedSampler` draws n distinct prompts with weight_i = curriculum_mask_i(t) * ((1 - s_i) + floor)
  when prioritized (the paper's P(i) ∝ 1 - s_i, plus a floor so solved prompts are still revisited),
  or curriculum_mask_i(t) alone (uniform over the curriculum's prompts). The success rates s_i are
  tracked either way, for the logs.

How a prioritized draw follows the weights. What the paper's rule has to govern is how often a
prompt is trained on, so the probability that prompt i is among an iteration's n prompts (its
inclusion probability pi_i) is made proportional to its weight: pi_i = n * w_i / sum(w). Drawing n
prompts one after another, each in proportion to the weights of those not yet drawn (the obvious
way, used here before), does not do that: once the heavy prompts are taken the light ones fill the
rest, and at a 10:1 weight ratio (64 vs 64 of 128 prompts) the realised inclusion ratio was 8.9 at
n=16, 7.8 at n=32 and 5.1 at n=64. Here instead:

1. pi_i = n * w_i / sum(w). A prompt whose share of the weight exceeds 1/n would need pi_i > 1: it
   is taken in every iteration (pi_i = 1), and the other slots are shared in proportion to the
   remaining weights, repeated until no pi exceeds 1. Such a prompt is drawn less often than its
   weight asks, because it cannot be drawn twice in an iteration (logged: sampler/certain_frac).
2. Systematic sampling over a fresh random order of the prompts: lay the pi_i end to end on [0, n)
   and take the prompts under the points u, u + 1, ..., u + n - 1 for one u ~ U[0, 1). Each prompt's
   stretch has length pi_i <= 1, so it holds one point with probability exactly pi_i and never two:
   the n prompts are distinct and the inclusion probabilities are exact. The random order keeps
   which prompts share an iteration from depending on their positions in the set.

Why distinct prompts rather than n independent draws with replacement (which follow the weights
without any cap): an iteration then always holds n distinct prompts, as under the uniform pass and
the curriculum, so a prioritized arm differs from a uniform one only in which prompts it trains on,
not in how many distinct ones or in groups of one prompt sharing an iteration, and each prompt's
success rate gets at most one update per draw. The price is the cap of step 1, which binds only
when a prompt carries more than 1/n of all the weight (say a few unsolved prompts among many
solved ones); such a prompt is then trained on in every iteration, the most a draw of distinct
prompts allows.

`floor=0` is the paper's rule exactly: a solved prompt (s_i = 1) has weight 0 and is drawn only to
fill slots that fewer than n unsolved drawable prompts leave, uniformly among the solved drawable
ones; when every drawable prompt is solved the draw is uniform over the curriculum's prompts. The
share of slots filled that way is logged as sampler/solved_fill_frac (1: all solved, uniform).

Without prioritizing (curriculum only) all drawable prompts weigh the same; one-after-another
drawing is then exactly uniform over n-subsets and is kept as it was, so those runs draw the same
prompts as before.
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
        self.certain_frac = 0.0  # latest draw: share of drawable prompts taken for certain (pi capped at 1)
        self.solved_fill_frac = 0.0  # latest draw: share of its slots given to weight-0 (solved) prompts

    def priorities(self, iteration: int) -> torch.Tensor:
        """The rule's weights: mask_i * ((1 - s_i) + floor) when prioritized, else mask_i; 0 = not drawn by weight."""
        mask = self.curriculum.mask(iteration).double()
        if not self.prioritized:
            return mask
        return mask * ((1.0 - self.tracker.rates) + self.floor).clamp_min(0.0)  # an s_i rounded above 1 is solved

    def weights(self, iteration: int) -> torch.Tensor:
        """The priorities, or, when every drawable prompt is solved (floor 0), uniform over the drawable ones."""
        weights = self.priorities(iteration)
        return weights if bool((weights > 0).any()) else self.curriculum.mask(iteration).double()

    def probabilities(self, iteration: int) -> torch.Tensor:
        weights = self.weights(iteration)
        return weights / weights.sum()

    def draw(self, n: int, iteration: int = 0) -> list[int]:
        self.iteration = iteration
        if not self.prioritized:  # equal weights: one after another is exact, and keeps earlier runs' draws
            probs = self.probabilities(iteration)
            self.drawn = torch.multinomial(probs, n, replacement=False, generator=self.generator).tolist() if n else []
        else:
            mask, priorities = self.curriculum.mask(iteration), self.priorities(iteration)
            pi = inclusion_probabilities(priorities, mask, n)
            self.drawn = systematic_draw(pi, n, self.generator)
            self.certain_frac = float((pi >= 1.0).sum()) / int(mask.sum())
            self.solved_fill_frac = float((priorities[self.drawn] == 0).double().mean()) if self.drawn else 0.0
        self.drawn_success = float(self.tracker.rates[self.drawn].mean()) if self.drawn else 0.0
        return self.drawn

    def update(self, indices: list[int], successes: list[float]) -> None:
        self.tracker.update(indices, successes)

    def stats(self) -> dict[str, float]:
        probs = self.probabilities(self.iteration)
        eligible = probs[self.curriculum.mask(self.iteration)]  # with floor 0 some of these may be 0
        relative = eligible * eligible.numel()  # 1 = the uniform share among drawable prompts
        entropy = float(-torch.special.xlogy(eligible, eligible).sum())
        out = {
            "sampler/success_mean": float(self.tracker.rates.mean()),
            "sampler/seen_frac": float((self.tracker.counts > 0).double().mean()),
            "sampler/weight_max": float(relative.max()),
            "sampler/weight_min": float(relative.min()),
            "sampler/effective_frac": float(torch.tensor(entropy).exp()) / eligible.numel(),  # 1 = uniform
        }
        if self.prioritized:
            out["sampler/certain_frac"] = self.certain_frac
            out["sampler/solved_fill_frac"] = self.solved_fill_frac
        if self.drawn:
            out["sampler/drawn_success_mean"] = self.drawn_success
            if bool((self.difficulties >= 0).all()):
                out["sampler/drawn_difficulty_mean"] = float(self.difficulties[self.drawn].float().mean())
        out.update(self.curriculum.stats(self.iteration))
        return out

    def histograms(self) -> dict[str, torch.Tensor]:
        probs = self.probabilities(self.iteration)
        eligible = probs[self.curriculum.mask(self.iteration)]
        return {"sampler/success_rate": self.tracker.rates.float(), "sampler/weights": (eligible * eligible.numel()).float()}

    def state_dict(self) -> dict:
        return {
            "generator": self.generator.get_state(), "tracker": self.tracker.state_dict(),
            "iteration": self.iteration, "drawn": list(self.drawn), "drawn_success": self.drawn_success,
            "certain_frac": self.certain_frac, "solved_fill_frac": self.solved_fill_frac,
        }

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])
        self.tracker.load_state_dict(state["tracker"])
        self.iteration, self.drawn, self.drawn_success = int(state["iteration"]), list(state["drawn"]), float(state["drawn_success"])
        # absent from checkpoints written before these were logged; the next draw sets them anyway
        self.certain_frac = float(state.get("certain_frac", 0.0))
        self.solved_fill_frac = float(state.get("solved_fill_frac", 0.0))


def inclusion_probabilities(weights: torch.Tensor, drawable: torch.Tensor, n: int) -> torch.Tensor:
    """pi_i for a draw of n distinct prompts: n * w_i / sum(w), capped at 1 (see the module docstring).

    The prompts above the cap get 1 and the others share the slots left, in proportion to their
    weights, until none is above. If fewer than n prompts have weight > 0, all of them get 1 and the
    slots left are shared evenly by the drawable weight-0 prompts. The result sums to n.
    """
    pi = torch.zeros_like(weights, dtype=torch.float64)
    positive = weights > 0
    if int(positive.sum()) <= n:
        pi[positive] = 1.0
        solved = drawable & ~positive
        if n > int(positive.sum()):
            pi[solved] = (n - int(positive.sum())) / int(solved.sum())
        return pi
    certain = torch.zeros_like(positive)
    while True:
        free = positive & ~certain
        scaled = weights * ((n - int(certain.sum())) / float(weights[free].sum()))
        over = free & (scaled >= 1.0)
        if not bool(over.any()):
            break
        certain |= over
    pi[certain] = 1.0
    pi[free] = scaled[free]
    return pi


def systematic_draw(pi: torch.Tensor, n: int, generator: torch.Generator) -> list[int]:
    """n distinct indices, index i with probability pi_i (each <= 1, summing to n), in a random order.

    Certain ones (pi = 1) are taken outright; the rest by one systematic pass: over a random order,
    the stretches pi_i laid end to end, and the indices under u, u + 1, ... for one u ~ U[0, 1).
    """
    if n == 0:
        return []
    order = torch.randperm(len(pi), generator=generator)
    u = float(torch.rand(1, generator=generator, dtype=torch.float64))
    chosen = pi >= 1.0
    slots = n - int(chosen.sum())
    if slots > 0:
        stretches = torch.where(chosen, 0.0, pi)[order]
        ends = stretches.cumsum(0)
        ends = ends * (slots / float(ends[-1]))  # rounding: the last end is exactly `slots`
        ends[-1] = slots
        hits = torch.searchsorted(ends, u + torch.arange(slots, dtype=torch.float64), right=True)
        chosen[order[hits]] = True
    drawn = order[chosen[order]].tolist()  # in the random order, so no index position is favoured
    if len(drawn) != n:
        raise RuntimeError(f"systematic draw took {len(drawn)} prompts, wanted {n}")  # a bug, never expected
    return drawn


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
