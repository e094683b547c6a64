"""The DPO loss (Rafailov et al. 2023) on sequence log-probabilities.

    loss = -log sigmoid( beta * ((logp_c - ref_c) - (logp_r - ref_r)) )  +  nll_weight * (-logp_c / |chosen|)

averaged over pairs; ref_* are the reference model's log-probs, computed once before training. The
second term is the chosen response's per-token negative log-likelihood, as in RPO (Pang et al.
2024): plain DPO can lower the chosen response's likelihood along with the rejected one's and drift
to text neither pair contains. `long2short.dpo_nll_weight` sets its weight (1.0 by default in the
pipeline, 0 here); 0 is the paper's standard DPO.
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
    nll_weight: float = 0.0,
    chosen_tokens: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    chosen_reward = beta * (logp_chosen - ref_chosen.detach())
    rejected_reward = beta * (logp_rejected - ref_rejected.detach())
    margin = chosen_reward - rejected_reward
    loss = -F.logsigmoid(margin).mean()
    stats = {}
    if nll_weight:
        if chosen_tokens is None:
            raise ValueError("dpo_loss: nll_weight needs chosen_tokens (the chosen responses' lengths)")
        nll = -(logp_chosen / chosen_tokens).mean()
        loss = loss + nll_weight * nll
        stats["chosen_nll"] = nll.detach()
    stats |= {
        "loss": loss.detach(),
        "reward_margin": margin.detach().mean(),
        "reward_accuracy": (margin.detach() > 0).float().mean(),
        "chosen_reward": chosen_reward.detach().mean(),
        "rejected_reward": rejected_reward.detach().mean(),
    }
    return loss, stats
