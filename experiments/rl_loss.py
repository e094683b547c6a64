"""Ablation (paper Fig. 10): the k1.5 loss vs ReST (no negative gradient) vs plain REINFORCE, from one SFT model."""

from k15.config import ExperimentConfig
from experiments._ablation import ablation_base


def config() -> dict[str, ExperimentConfig]:
    arms = {}
    for loss in ("k15", "rest", "reinforce"):
        cfg = ablation_base()
        cfg.rl.loss = loss
        arms[loss] = cfg
    return arms
