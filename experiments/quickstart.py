"""The whole pipeline on the tiny synthetic world: pretrain -> long-CoT SFT -> k1.5 RL -> held-out eval."""

from k15.config import ExperimentConfig, base


def config() -> ExperimentConfig:
    cfg = base(model="tiny", trainer="cpu")
    cfg.run.threads = 2
    cfg.stages = ["pretrain", "sft", "rl", "eval"]
    cfg.eval.models = ["sft", "rl"]
    return cfg
