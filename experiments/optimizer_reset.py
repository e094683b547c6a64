"""Ablation (F11): a fresh AdamW every RL iteration (the paper) vs one optimizer kept across iterations."""

from k15.config import ExperimentConfig
from experiments._ablation import ablation_base


def config() -> dict[str, ExperimentConfig]:
    arms = {}
    for name, reset in (("reset", True), ("persistent", False)):
        cfg = ablation_base()
        cfg.rl.reset_optimizer = reset
        arms[name] = cfg
    return arms
