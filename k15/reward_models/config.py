"""Settings of the learned reward models (paper §2.3.5): their data, the Classic RM and the CoT RM.

They are the `reward_model` section of ExperimentConfig, so the dataclasses live in k15.config (which
this package imports: defining them here would make an import cycle); re-exported for the RM code.
The defaults train each RM in a few minutes on CPU from the tiny world's SFT model.
"""

from k15.config import RewardModelConfig, RMDataConfig, RMTrainConfig

__all__ = ["RewardModelConfig", "RMDataConfig", "RMTrainConfig"]
