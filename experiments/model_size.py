"""Finding F7 (paper Fig. 8): the tiny (~1M) vs the small (~4.2M) model, each pretrained, SFT'd and RL'd the same way.

Each arm trains its own model from scratch, so this experiment runs two whole pipelines (the
longest of the findings: 22 minutes on 2 idle cores, docs/results.md).
"""

from k15.config import ExperimentConfig, apply_preset
from experiments._ablation import ablation_base


def config() -> dict[str, ExperimentConfig]:
    arms = {}
    for size in ("tiny", "small"):
        cfg = ablation_base()
        apply_preset(cfg, "model", size)
        arms[size] = cfg
    return arms
