"""Ablation (finding F10): the mean-reward baseline vs the exact tau*log-mean-exp estimate of tau*log Z."""

from k15.config import ExperimentConfig
from experiments._ablation import ablation_base


def config() -> dict[str, ExperimentConfig]:
    arms = {}
    for baseline in ("mean", "logmeanexp"):
        cfg = ablation_base()
        cfg.rl.baseline = baseline
        arms[baseline] = cfg
    return arms
