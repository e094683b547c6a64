"""Finding F1 (paper Figs. 5-6): one plain k1.5 RL run; answer length and accuracy rise together, most on hard levels."""

from k15.config import ExperimentConfig
from experiments._ablation import ablation_base


def config() -> dict[str, ExperimentConfig]:
    # One arm: the finding is about the curves of a single run (train reward and rollout length in
    # TensorBoard, held-out pass@1 and tokens per level for the SFT and RL models in results.json).
    cfg = ablation_base()
    return {"plain": cfg}
