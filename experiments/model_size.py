"""Finding F7 (paper Fig. 8): the tiny (~1M) vs the small (~4.2M) model, each pretrained, SFT'd and RL'd the same way.

Each arm trains its own model from scratch, so this experiment runs two whole pipelines. To fit 30
minutes on 2 cores, both pretrain and SFT for half the quickstart's steps (400 and 150) by default;
docs/results.md ran them at the quickstart's 800 and 300 (`pretrain.max_steps=800 sft.max_steps=300`).
"""

from k15.config import ExperimentConfig, apply_preset
from experiments._ablation import ablation_base


def config() -> dict[str, ExperimentConfig]:
    arms = {}
    for size in ("tiny", "small"):
        cfg = ablation_base()
        apply_preset(cfg, "model", size)
        cfg.pretrain.max_steps //= 2
        cfg.sft.max_steps //= 2
        arms[size] = cfg
    return arms
