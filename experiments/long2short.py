"""long2short (paper Fig. 7): merge, shortest rejection sampling, DPO and long2short RL from one long-CoT RL model."""

from k15.config import ExperimentConfig
from experiments._ablation import ablation_base

METHODS = ["merge", "shortest_rs", "dpo", "l2s_rl"]


def config() -> ExperimentConfig:
    """Trains the long-CoT model first (pretrain -> SFT -> RL); to start from your own RL checkpoint,
    run with `model.init_from=DIR long2short.long_model=DIR long2short.short_model=SHORT_DIR
    stages=[merge,shortest_rs,dpo,l2s_rl,eval] eval.models=[init,merge,shortest_rs,dpo,l2s_rl]`."""
    cfg = ablation_base()
    cfg.stages = ["pretrain", "sft", "rl", *METHODS, "eval"]
    cfg.eval.models = ["sft", "rl", *METHODS]
    cfg.long2short.long_model = "rl"
    cfg.long2short.short_model = "sft"
    return cfg
