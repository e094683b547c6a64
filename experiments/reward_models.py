"""Classic RM vs chain-of-thought RM (paper §2.3.5): agreement with the checker on a held-out spot check.

Measures how often each learned reward model's verdict on a free-form answer matches the exact checker
(accuracy, precision / recall on wrong answers, unparsed verdicts) over held-out questions; the paper
reports 84.4% for its Classic RM and 98.5% for its CoT RM. Both start from the quickstart's SFT model
and train on its rollouts plus rewrites (RUN/rm_data); sizes are RewardModelConfig's (minutes on CPU).
"""

from k15.config import ExperimentConfig
from experiments.quickstart import config as quickstart


def config() -> ExperimentConfig:
    cfg = quickstart()
    cfg.stages = ["pretrain", "sft", "rm_data", "classic_rm", "cot_rm"]
    cfg.eval.models = []  # no policy evaluation: the RMs' spot check is the result (summary.json "reward_models")
    cfg.reward_model.init_from = cfg.reward_model.policy = "sft"
    return cfg
