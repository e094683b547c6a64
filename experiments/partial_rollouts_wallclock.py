"""Finding F8 at equal wall-clock (issue #19): synchronous full rollouts vs asynchronous rollout workers, with and without partial rollouts, each given the same RL seconds."""

from k15.config import ExperimentConfig
from experiments._ablation import ablation_base

SECONDS = 60.0  # about the synchronous loop's 30 iterations on one idle core (docs/results.md, F8)


def config() -> dict[str, ExperimentConfig]:
    arms = {}
    for name, workers, budget in (("full", 0, 0), ("full_async", 1, 0), ("partial_async", 1, 24)):
        cfg = ablation_base()
        cfg.rl.iterations = 100_000  # the clock ends every arm
        cfg.rl.max_seconds = SECONDS
        cfg.rl.asynchronous.workers = workers  # one rollout worker beside the trainer: the second core
        cfg.rl.partial.budget = budget  # F8's budget: most long-CoT answers (~30 tokens) span two segments
        arms[name] = cfg
    return arms
