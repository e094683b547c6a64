"""The quickstart with the whole k1.5 RL recipe on: curriculum + prioritized sampling, length penalty, partial rollouts, repeat stop."""

from k15.config import ExperimentConfig
from experiments.quickstart import config as quickstart


def config() -> ExperimentConfig:
    cfg = quickstart()
    r = cfg.rl
    half = r.iterations // 2
    # Curriculum as in the paper's ablation (all prompts, then hard ones only: iteration 24 of 44
    # there); "hard" is the upper half of the difficulty labels (levels 4-6 of the default world).
    # Prioritized sampling on top.
    r.sampling.curriculum = "paper"
    r.sampling.hard_from_iteration = half
    r.sampling.prioritized = True
    # Plain RL first (the long CoT must win first), then a constant, small length penalty.
    r.length_penalty.weight = 0.1
    r.length_penalty.warmup_iterations = half
    # A budget below the longest answers: those continue in the next iteration.
    r.partial.budget = r.max_new_tokens // 3
    # A loop repeats its stretch of tokens every cycle. Correct chains of thought here can repeat a
    # whole step ("0-0=0," up to 6 times), in which any 8-gram occurs at most 5 times: 6 is a loop.
    r.repeat.ngram = 8
    r.repeat.threshold = 6
    r.repeat.penalty = 0.5
    return cfg
