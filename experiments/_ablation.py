"""The base config of the findings' experiments: the quickstart, with a shorter RL stage.

Every arm of an ablation runs its own RL after the shared pretraining and SFT, so the RL stage sets
the cost: 30 iterations x 16 prompts (x 8 samples) per arm keeps an experiment of three arms within
30 minutes on 2 cores, and is the setting docs/results.md reports. Checkpoints every 10 iterations
give accuracy-vs-length points along the run (tools/findings.py evaluates them).
"""

from k15.config import ExperimentConfig
from experiments.quickstart import config as quickstart


def ablation_base() -> ExperimentConfig:
    cfg = quickstart()
    cfg.pretrain.max_steps, cfg.sft.max_steps = 800, 300  # the shared SFT model of the report's runs
    cfg.rl.iterations = 30
    cfg.rl.prompts_per_iteration = 16
    cfg.rl.checkpoint_every_n_iterations = 10
    return cfg
