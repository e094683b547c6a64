"""The DPO loss (Rafailov et al. 2023) on sequence log-probabilities.

    loss = -log sigmoid( beta * ((logp_c - ref_c) - (logp_r - ref_r)) )

averaged over pairs; ref_* are the reference model's log-probs, computed once before training.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def dpo_loss(
    logp_chosen: torch.Tensor,
    logp_rejected: torch.Tensor,
    ref_chosen: torch.Tensor,
    ref_rejected: torch.Tensor,
    beta: float,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    chosen_reward = beta * (logp_chosen - ref_chosen.detach())
    rejected_reward = beta * (logp_rejected - ref_rejected.detach())
    margin = chosen_reward - rejected_reward
    loss = -F.logsigmoid(margin).mean()
    stats = {
        "loss": loss.detach(),
        "reward_margin": margin.detach().mean(),
        "reward_accuracy": (margin.detach() > 0).float().mean(),
        "chosen_reward": chosen_reward.detach().mean(),
        "rejected_reward": rejected_reward.detach().mean(),
    }
    return loss, stats
