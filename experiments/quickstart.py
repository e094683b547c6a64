"""The whole pipeline on the tiny synthetic world: pretrain -> long-CoT SFT -> held-out evaluation."""

from k15.config import ExperimentConfig, base


def config() -> ExperimentConfig:
    cfg = base(model="tiny", trainer="cpu")
    cfg.run.threads = 2
    cfg.stages = ["pretrain", "sft", "eval"]
    cfg.eval.models = ["sft"]
    return cfg
