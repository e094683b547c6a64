"""Finding F1 (paper Figs. 5-6): one plain k1.5 RL run; answer length and accuracy rise together, most on hard levels."""

from k15.config import ExperimentConfig
from experiments.quickstart import config as quickstart


def config() -> dict[str, ExperimentConfig]:
    # One arm: the finding is about the curves of a single run (train reward and rollout length in
    # TensorBoard, held-out pass@1 and tokens per level for the SFT and RL models in results.json).
    cfg = quickstart()
    cfg.rl.checkpoint_every_n_iterations = 10  # checkpoints along the run, for accuracy-vs-length points
    return {"plain": cfg}
