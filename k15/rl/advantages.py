"""Group baselines and advantages for k samples per prompt (paper §2.3.2, eq. 3).

Each prompt x is sampled k times; the k responses form a *group*. The advantage of a sample is
its reward minus a baseline computed from its own group:

    adv_j = r_j - b(group of j)

Two baselines are available:

- ``"mean"``        b = r_bar = (1/k) * sum_j r_j, over the whole group *including* sample j itself
                    (the paper's practical choice; not leave-one-out, no std-normalisation).
- ``"logmeanexp"``  b = tau * log( (1/k) * sum_j exp(r_j / tau) ), the exact estimate of tau * log Z.
                    It lies in [r_bar, max_j r_j]; it tends to r_bar as tau -> inf and to max_j r_j as tau -> 0.

Groups are identified by ``group_ids`` (any long ids, not necessarily dense), never by position:
groups may have different sizes and their samples may be interleaved in the batch.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor

BaselineEstimator = Literal["mean", "logmeanexp"]


def _check_inputs(rewards: Tensor, group_ids: Tensor) -> Tensor:
    """Validate shapes/dtypes and return the rewards as a floating tensor."""
    if rewards.dim() != 1:
        raise ValueError(f"rewards must be 1-D [N], got shape {tuple(rewards.shape)}")
    if group_ids.shape != rewards.shape:
        raise ValueError(f"group_ids shape {tuple(group_ids.shape)} != rewards shape {tuple(rewards.shape)}")
    if group_ids.dtype not in (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8):
        raise TypeError(f"group_ids must be an integer tensor, got {group_ids.dtype}")
    if rewards.numel() == 0:
        raise ValueError("rewards is empty")
    # Integer rewards (e.g. a 0/1 verifier output) would make means and logsumexp integer-truncated.
    return rewards if rewards.is_floating_point() else rewards.to(torch.get_default_dtype())


def _dense_groups(group_ids: Tensor) -> tuple[Tensor, int]:
    """Map arbitrary ids to 0..G-1. Returns (index of each sample's group [N], G)."""
    uniq, inverse = torch.unique(group_ids, return_inverse=True)
    return inverse, uniq.numel()


def _group_reduce(values: Tensor, index: Tensor, num_groups: int, reduce: str) -> Tensor:
    """Per-group reduction ("sum", "amax", "amin") of ``values`` [N] into [G]."""
    out = values.new_zeros(num_groups)
    # include_self=False: the zero init must not take part in amax/amin.
    return out.scatter_reduce(0, index, values, reduce=reduce, include_self=False)


def group_baseline(
    rewards: Tensor,
    group_ids: Tensor,
    estimator: BaselineEstimator = "mean",
    tau: float = 1.0,
) -> Tensor:
    """Baseline of each sample's group, shape [N].

    mean:        b_g = (1/k_g) * sum_{j in g} r_j
    logmeanexp:  b_g = tau * log( (1/k_g) * sum_{j in g} exp(r_j / tau) )
                     = m_g + tau * ( log sum_{j in g} exp((r_j - m_g)/tau) - log k_g ),  m_g = max_{j in g} r_j

    ``tau`` is only used by "logmeanexp". The max-shift is the logsumexp trick done per group with
    scatter ops, so tiny tau cannot overflow exp().
    """
    rewards = _check_inputs(rewards, group_ids)
    index, num_groups = _dense_groups(group_ids)
    counts = torch.bincount(index, minlength=num_groups).to(rewards.dtype)

    if estimator == "mean":
        per_group = _group_reduce(rewards, index, num_groups, "sum") / counts
    elif estimator == "logmeanexp":
        if not (tau > 0 and math.isfinite(tau)):
            raise ValueError(f"tau must be a positive finite number, got {tau}")
        group_max = _group_reduce(rewards, index, num_groups, "amax")
        # Every shifted exponent is <= 0 and the group max contributes exp(0)=1, so the sum is in [1, k_g].
        shifted = torch.exp((rewards - group_max[index]) / tau)
        log_mean = torch.log(_group_reduce(shifted, index, num_groups, "sum")) - torch.log(counts)
        per_group = group_max + tau * log_mean
    else:
        raise ValueError(f"unknown baseline estimator {estimator!r}; expected 'mean' or 'logmeanexp'")
    return per_group[index]


def advantages(
    rewards: Tensor,
    group_ids: Tensor,
    estimator: BaselineEstimator = "mean",
    tau: float = 1.0,
) -> Tensor:
    """adv_j = r_j - b(group of j), shape [N]; see :func:`group_baseline`.

    Compute once per RL iteration on the full batch, so that optimizer mini-batches that split a
    group still use the whole group's baseline.
    """
    rewards = _check_inputs(rewards, group_ids)
    return rewards - group_baseline(rewards, group_ids, estimator, tau)


def group_stats(rewards: Tensor, group_ids: Tensor) -> dict[str, Tensor]:
    """Detached scalar statistics of a batch of grouped rewards, keyed for a logger.

    - ``reward_mean``, ``reward_std``: over all samples (population std, correction 0).
    - ``group_std_mean``: mean over groups of the within-group population std; this is the spread the
      mean baseline can turn into a learning signal.
    - ``zero_std_frac``: fraction of groups whose rewards are all equal (max == min, exact). Such a
      group has zero advantage everywhere under the mean baseline: it gives no policy gradient.
    - ``solved_all_frac`` / ``solved_none_frac``: fraction of groups whose rewards are all > 0.5 / all
      <= 0.5 (the two kinds of zero-std group, for binary 0/1 rewards).
    - ``num_groups``, ``group_size_mean``.
    """
    rewards = _check_inputs(rewards, group_ids).detach()
    index, num_groups = _dense_groups(group_ids)
    counts = torch.bincount(index, minlength=num_groups).to(rewards.dtype)

    group_mean = _group_reduce(rewards, index, num_groups, "sum") / counts
    # Two-pass variance (deviation from the group mean) avoids the cancellation of E[r^2] - E[r]^2.
    dev_sq = (rewards - group_mean[index]) ** 2
    group_std = torch.sqrt(_group_reduce(dev_sq, index, num_groups, "sum") / counts)
    group_max = _group_reduce(rewards, index, num_groups, "amax")
    group_min = _group_reduce(rewards, index, num_groups, "amin")

    return {
        "reward_mean": rewards.mean(),
        "reward_std": rewards.std(correction=0),
        "group_std_mean": group_std.mean(),
        "zero_std_frac": (group_max == group_min).to(rewards.dtype).mean(),
        "solved_all_frac": (group_min > 0.5).to(rewards.dtype).mean(),
        "solved_none_frac": (group_max <= 0.5).to(rewards.dtype).mean(),
        "num_groups": torch.tensor(float(num_groups), dtype=rewards.dtype, device=rewards.device),
        "group_size_mean": counts.mean(),
    }
