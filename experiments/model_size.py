"""Finding F7 (paper Fig. 8): the tiny (~1M) vs the small (~3.4M) model, each pretrained, SFT'd and RL'd the same way."""

from k15.config import ExperimentConfig, apply_preset
from experiments.quickstart import config as quickstart


def config() -> dict[str, ExperimentConfig]:
    arms = {}
    for size in ("tiny", "small"):
        cfg = quickstart()
        apply_preset(cfg, "model", size)
        cfg.rl.checkpoint_every_n_iterations = 10  # checkpoints along the run, for accuracy-vs-length points
        arms[size] = cfg
    return arms
