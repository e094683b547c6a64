"""Next-token selection for the rollout engine: greedy, temperature and top-p (nucleus) sampling.

The RL loss needs the log-probability of every sampled token under the policy itself (temperature 1,
no truncation), so the sampler always returns those alongside the tokens, whatever distribution the
tokens were actually drawn from.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from k15.rollout.repeat import RepeatRule


@dataclass
class SamplingParams:
    max_new_tokens: int
    temperature: float = 1.0  # 0.0 means greedy (argmax)
    top_p: float = 1.0
    stop_token_ids: tuple[int, ...] = ()
    repeat: RepeatRule | None = None  # stop a looping response early (finish reason "repeat")

    def __post_init__(self) -> None:
        if self.max_new_tokens < 0:
            raise ValueError(f"max_new_tokens must be >= 0, got {self.max_new_tokens}")
        if self.temperature < 0.0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        self.stop_token_ids = tuple(int(t) for t in self.stop_token_ids)


def top_p_filter(probs: torch.Tensor, top_p: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Zero out the tail of each row outside the smallest set of tokens whose mass reaches `top_p`.

    Returns the filtered probabilities in descending order and the token ids of that order, so the
    caller samples an index into the sorted row and maps it back (cheaper than scattering back).
    The most likely token is always kept: the mass *before* it is 0 < top_p.
    """
    sorted_probs, sorted_ids = probs.sort(dim=-1, descending=True)
    mass_before = sorted_probs.cumsum(dim=-1) - sorted_probs
    sorted_probs = sorted_probs.masked_fill(mass_before >= top_p, 0.0)
    return sorted_probs, sorted_ids


def sample_next(
    logits: torch.Tensor, params: SamplingParams, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pick one token per row of `logits` [rows, vocab].

    Returns (tokens [rows] int64, logprobs [rows] float32), where logprobs are log p(token) under
    softmax(logits) — temperature 1, no top-p — which is what the policy-gradient loss recomputes.
    """
    logits = logits.float()
    logprobs_all = torch.log_softmax(logits, dim=-1)
    if params.temperature == 0.0:
        tokens = logits.argmax(dim=-1)
    else:
        if params.temperature == 1.0:
            probs = logprobs_all.exp()  # reuse the softmax we already need for the logprobs
        else:
            probs = torch.softmax(logits / params.temperature, dim=-1)
        if params.top_p < 1.0:
            sorted_probs, sorted_ids = top_p_filter(probs, params.top_p)
            picked = torch.multinomial(sorted_probs, 1, generator=generator)  # multinomial renormalises
            tokens = sorted_ids.gather(-1, picked).squeeze(-1)
        else:
            tokens = torch.multinomial(probs, 1, generator=generator).squeeze(-1)
    logprobs = logprobs_all.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)
    return tokens, logprobs
