"""Finding F4 (paper §2.3.4): uniform sampling vs prioritized sampling, P(i) proportional to (1 - s_i) + floor."""

from k15.config import ExperimentConfig
from experiments._ablation import ablation_base


def config() -> dict[str, ExperimentConfig]:
    uniform = ablation_base()
    prioritized = ablation_base()
    prioritized.rl.sampling.prioritized = True
    return {"uniform": uniform, "prioritized": prioritized}
