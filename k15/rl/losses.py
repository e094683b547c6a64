"""RL losses on sequence log-probabilities (paper §2.3.2, policy mirror descent).

All losses are minimised. Inputs are per-sample [N] tensors: ``logp`` = log pi_theta(y_j, z_j | x)
(a function of the parameters), ``logp_ref`` = log pi_{theta_i}(y_j, z_j | x) from the reference
(the policy at the start of the iteration), ``adv`` = r_j - baseline (see :mod:`k15.rl.advantages`).

The k1.5 loss averaged over the k samples of a prompt has gradient -g, where g is the paper's
eq. 3 ascent direction:

    g = (1/k) * sum_j [ grad logp_j * (r_j - r_bar) - (tau/2) * grad (logp_j - logp_ref_j)^2 ]

Each loss returns ``(loss, stats)``; ``stats`` holds detached 0-d tensors for logging.
"""

from __future__ import annotations

from typing import Literal, get_args

import torch
from torch import Tensor

Normalization = Literal["sum", "mean", "constant"]
LossName = Literal["k15", "rest", "reinforce"]
LOSS_NAMES: tuple[str, ...] = get_args(LossName)  # for validating config strings


def sequence_logprob(
    token_logprobs: Tensor,
    mask: Tensor,
    normalization: Normalization = "sum",
    constant: float | None = None,
) -> Tensor:
    """Per-sequence log-probability [N] from per-token log-probs [N, T] and a loss mask [N, T].

    sum:       s_j = sum_t m_jt * lp_jt                       (the sequence log-prob; paper default)
    mean:      s_j = sum_t m_jt * lp_jt / max(1, sum_t m_jt)  (per-sequence length normalisation)
    constant:  s_j = sum_t m_jt * lp_jt / constant            (fixed divisor, e.g. the max response
                                                               length: no per-sequence length bias)

    Masked positions are selected out, not multiplied by 0, so a -inf/nan log-prob on a padding
    token cannot poison the sum or its gradient.
    """
    if token_logprobs.dim() != 2:
        raise ValueError(f"token_logprobs must be [N, T], got shape {tuple(token_logprobs.shape)}")
    if mask.shape != token_logprobs.shape:
        raise ValueError(f"mask shape {tuple(mask.shape)} != token_logprobs shape {tuple(token_logprobs.shape)}")
    keep = mask.bool()
    total = torch.where(keep, token_logprobs, torch.zeros_like(token_logprobs)).sum(dim=-1)

    if normalization == "sum":
        if constant is not None:
            raise ValueError("constant is only used with normalization='constant'")
        return total
    if normalization == "mean":
        if constant is not None:
            raise ValueError("constant is only used with normalization='constant'")
        # A sequence with no loss token gets 0 instead of 0/0 = nan.
        n_tokens = keep.sum(dim=-1).clamp(min=1).to(total.dtype)
        return total / n_tokens
    if normalization == "constant":
        if constant is None or not constant > 0:
            raise ValueError(f"normalization='constant' needs a positive constant, got {constant}")
        return total / constant
    raise ValueError(f"unknown normalization {normalization!r}; expected 'sum', 'mean' or 'constant'")


def _check_same_1d(**tensors: Tensor) -> None:
    shapes = {name: tuple(t.shape) for name, t in tensors.items()}
    first = next(iter(shapes.values()))
    if len(first) != 1 or any(s != first for s in shapes.values()):
        raise ValueError(f"expected 1-D tensors of one shape [N], got {shapes}")
    if first[0] == 0:
        raise ValueError("empty batch")


def k15_loss(logp: Tensor, logp_ref: Tensor, adv: Tensor, tau: float) -> tuple[Tensor, dict[str, Tensor]]:
    """Kimi k1.5 mirror-descent loss, averaged over samples:

        loss = mean_j [ -adv_j * logp_j + (tau/2) * (logp_j - logp_ref_j)^2 ]

    ``adv`` and ``logp_ref`` are treated as constants (detached): the advantage is computed once per
    iteration from whole groups, and the reference policy pi_{theta_i} is frozen for the iteration.
    At theta = theta_i the squared term has zero gradient, so the first step is plain REINFORCE.
    """
    _check_same_1d(logp=logp, logp_ref=logp_ref, adv=adv)
    if not tau > 0:
        raise ValueError(f"tau must be positive, got {tau}")
    adv = adv.detach().to(logp.dtype)
    log_ratio = logp - logp_ref.detach().to(logp.dtype)

    pg = -(adv * logp).mean()
    sq = 0.5 * (log_ratio**2).mean()
    loss = pg + tau * sq

    stats = {
        "loss": loss.detach(),
        "pg_loss": pg.detach(),
        "sq_term": sq.detach(),  # mean 0.5*(logp - logp_ref)^2, before the tau weight
        "sq_loss": (tau * sq).detach(),
        "log_ratio_mean": log_ratio.detach().mean(),
        "log_ratio_absmax": log_ratio.detach().abs().max(),
        "adv_mean": adv.mean(),
        "logp_mean": logp.detach().mean(),
    }
    return loss, stats


def rest_loss(logp: Tensor, rewards: Tensor, threshold: float = 0.5) -> tuple[Tensor, dict[str, Tensor]]:
    """ReST / rejection-sampling fine-tuning: maximise the likelihood of correct samples only.

        P = { j : r_j > threshold },   loss = -(1/|P|) * sum_{j in P} logp_j,   loss = 0 if P is empty

    There is no negative gradient: incorrect samples get exactly zero gradient. With P empty the
    loss is still a function of ``logp`` (with zero gradient), so ``backward()`` works in every batch.
    Pass the correctness reward, not a shaped reward (e.g. with a length penalty added).
    """
    _check_same_1d(logp=logp, rewards=rewards)
    positive = rewards.detach() > threshold
    # where(), not multiply-by-mask: a -inf logp on a rejected sample must not turn into nan.
    kept = torch.where(positive, logp, torch.zeros_like(logp))
    n_pos = positive.sum()
    loss = -kept.sum() / n_pos.clamp(min=1).to(logp.dtype)

    stats = {
        "loss": loss.detach(),
        "pos_frac": positive.to(logp.dtype).mean(),
        "num_pos": n_pos.to(logp.dtype),
        "logp_mean": logp.detach().mean(),
    }
    return loss, stats


def reinforce_loss(logp: Tensor, adv: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
    """REINFORCE with a baseline, no regulariser:  loss = -mean_j( adv_j * logp_j ), adv detached."""
    _check_same_1d(logp=logp, adv=adv)
    adv = adv.detach().to(logp.dtype)
    loss = -(adv * logp).mean()
    stats = {
        "loss": loss.detach(),
        "pg_loss": loss.detach(),
        "adv_mean": adv.mean(),
        "logp_mean": logp.detach().mean(),
    }
    return loss, stats


def _require(name: str, **inputs: object) -> None:
    missing = [key for key, value in inputs.items() if value is None]
    if missing:
        raise ValueError(f"rl_loss({name!r}) needs {', '.join(missing)}")


def rl_loss(
    name: LossName,
    logp: Tensor,
    *,
    logp_ref: Tensor | None = None,
    adv: Tensor | None = None,
    rewards: Tensor | None = None,
    tau: float | None = None,
    threshold: float = 0.5,
) -> tuple[Tensor, dict[str, Tensor]]:
    """Pick a loss by config name; each uses only the inputs it needs:
    k15 -> logp_ref, adv, tau;  rest -> rewards, threshold;  reinforce -> adv.
    """
    if name == "k15":
        _require(name, logp_ref=logp_ref, adv=adv, tau=tau)
        return k15_loss(logp, logp_ref, adv, tau)  # type: ignore[arg-type]
    if name == "rest":
        _require(name, rewards=rewards)
        return rest_loss(logp, rewards, threshold)  # type: ignore[arg-type]
    if name == "reinforce":
        _require(name, adv=adv)
        return reinforce_loss(logp, adv)  # type: ignore[arg-type]
    raise ValueError(f"unknown RL loss {name!r}; expected one of {LOSS_NAMES}")
