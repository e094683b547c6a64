"""Finding F5 (paper §2.3.3): the length penalty off, on from the first iteration, and on after a warm-up of half the run."""

from k15.config import ExperimentConfig
from experiments._ablation import ablation_base

WEIGHT = 0.2  # not given by the paper; r + 0.2 * len_reward moves a correct answer's reward by at most +-0.1


def config() -> dict[str, ExperimentConfig]:
    off = ablation_base()
    from_start = ablation_base()
    from_start.rl.length_penalty.weight = WEIGHT
    after_warmup = ablation_base()
    after_warmup.rl.length_penalty.weight = WEIGHT
    after_warmup.rl.length_penalty.warmup_iterations = after_warmup.rl.iterations // 2
    return {"off": off, "from_start": from_start, "after_warmup": after_warmup}
