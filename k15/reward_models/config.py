"""Settings of the learned reward models (paper §2.3.5): their data, the Classic RM and the CoT RM.

Proposed as the `reward_model` section of ExperimentConfig; the defaults train each RM in a few
minutes on CPU from the tiny world's SFT model.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from k15.config import OptimConfig


@dataclass
class RMDataConfig:
    """Labelled (question, reference, response, label) examples over the free-form domain (k15.synthetic.freeform)."""

    train_examples: int = 8000
    spotcheck_examples: int = 400  # held-out questions only: the RMs are compared on these
    positive_share: float = 0.5  # share of examples whose response is correct (exact, in every set)
    rollout_share: float = 0.25  # share from the policy's own rollouts (when a policy is given); the rest are rewrites
    rollout_temperature: float = 1.0
    rollout_max_new_tokens: int = 48
    min_level: int = 1  # chain lengths of the questions; short, so question + answers + rationale fit the context
    max_level: int = 4
    unit_share: float = 0.5  # questions that ask for a count of things ("how many apples?")


@dataclass
class RMTrainConfig:
    # ~5 (Classic) and ~10 (CoT) minutes on one CPU thread from the tiny SFT model; 300 steps left both near chance
    max_steps: int = 1000
    batch_size: int = 32  # examples per step
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(lr=2e-3, warmup_steps=20))


@dataclass
class RewardModelConfig:
    data: RMDataConfig = field(default_factory=RMDataConfig)
    classic: RMTrainConfig = field(default_factory=RMTrainConfig)
    cot: RMTrainConfig = field(default_factory=RMTrainConfig)
    init_from: str = "sft"  # a stage of this run or a checkpoint directory: both RMs start from it
    policy: str | None = "sft"  # whose rollouts go into the data (a stage or a directory); None: rewrites only
    verdict_format: str = "auto"  # auto (json when the tokenizer can write it, else plain) | json | plain
    # The RMs' context (tokens): question + reference + response (+ rationale and verdict: up to ~190 in the
    # tiny world); beyond the SFT model's 128 positions, which fine-tuning teaches (rotary positions extend).
    max_len: int = 256
    judge_max_new_tokens: int = 96  # the CoT RM's rationale + verdict (the generator's longest is 93 tokens)
    judge_batch_size: int = 64
