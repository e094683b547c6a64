"""The k1.5 length reward (paper §2.3.3), computed within each group of k samples of one prompt.

    lambda_i = 0.5 - (len_i - min_len) / (max_len - min_len)          in [-0.5, 0.5]
    len_reward_i = lambda_i            if sample i is correct
                   min(0, lambda_i)    if it is not
    len_reward = 0 for the whole group when max_len == min_len

min and max run over all k samples, correct or not. Among correct answers the shortest gets +0.5
and the longest -0.5; a wrong answer is never rewarded, only penalised when longer than the
midpoint of the range. "Correct" is the verifier's verdict, not the (possibly shaped) total reward.
The total is r + w * len_reward, where w follows the warm-up schedule (k15.callbacks.length_penalty).
"""

from __future__ import annotations

import torch
from torch import Tensor


def _group_range(lengths: Tensor, group_ids: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Per sample: its group's min and max length; and each sample's dense group index."""
    _, index = torch.unique(group_ids, return_inverse=True)
    init = lengths.new_zeros(int(index.max()) + 1)
    lo = init.scatter_reduce(0, index, lengths, "amin", include_self=False)
    hi = init.scatter_reduce(0, index, lengths, "amax", include_self=False)
    return lo[index], hi[index], index


def length_reward(lengths: Tensor, correct: Tensor, group_ids: Tensor) -> Tensor:
    """[N] float: each sample's length reward within its group (groups by id, not by position)."""
    if not (lengths.shape == correct.shape == group_ids.shape and lengths.dim() == 1 and lengths.numel() > 0):
        raise ValueError(f"expected three non-empty [N] tensors, got {tuple(lengths.shape)}, {tuple(correct.shape)}, {tuple(group_ids.shape)}")
    lengths = lengths.double()
    lo, hi, _ = _group_range(lengths, group_ids)
    span = hi - lo
    lam = torch.where(span > 0, 0.5 - (lengths - lo) / span.clamp(min=1.0), torch.zeros_like(lengths))
    return torch.where(correct.bool(), lam, lam.clamp(max=0.0)).float()


def length_stats(len_reward: Tensor, lengths: Tensor, correct: Tensor, group_ids: Tensor, weight: float) -> dict[str, float]:
    """rl/length_* scalars for TensorBoard."""
    correct = correct.bool()
    lo, hi, index = _group_range(lengths.double(), group_ids)
    first = torch.zeros(int(index.max()) + 1, dtype=torch.long).scatter_(0, index, torch.arange(len(index)))
    span = (hi - lo)[first]  # one value per group
    out = {
        "rl/length_penalty_weight": weight,
        "rl/length_reward_mean": float(len_reward.mean()),
        "rl/length_range_mean": float(span.mean()),  # mean (max_len - min_len) over groups
        "rl/length_equal_group_frac": float((span == 0).double().mean()),  # groups where the penalty is 0
    }
    if correct.any():
        out["rl/length_reward_correct_mean"] = float(len_reward[correct].mean())
    if (~correct).any():
        out["rl/length_reward_wrong_mean"] = float(len_reward[~correct].mean())
    return out
