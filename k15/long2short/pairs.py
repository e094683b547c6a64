"""Turning n sampled responses per prompt into long2short training data (paper §2.4).

- Shortest rejection sampling: keep the shortest correct response of each prompt as an SFT target.
- DPO pairs: chosen = the shortest correct response; rejected = every wrong response, and every
  correct response at least `long_ratio` (1.5) times longer than the chosen one.
Lengths are in response tokens.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple


@dataclass(frozen=True)
class Candidate:
    tokens: tuple[int, ...]  # response token ids
    correct: bool

    @property
    def length(self) -> int:
        return len(self.tokens)


class Pair(NamedTuple):  # a NamedTuple, so Lightning can move batches of pairs between devices
    prompt: tuple[int, ...]
    chosen: tuple[int, ...]
    rejected: tuple[int, ...]
    kind: str  # "wrong" or "long": why the rejected response is rejected


def shortest_correct(candidates: list[Candidate]) -> Candidate | None:
    """The shortest correct candidate (the first of equals, so the choice is deterministic), or None."""
    correct = [c for c in candidates if c.correct]
    return min(correct, key=lambda c: c.length) if correct else None


def dpo_pairs(prompt: list[int], candidates: list[Candidate], long_ratio: float = 1.5, max_pairs: int | None = None) -> list[Pair]:
    chosen = shortest_correct(candidates)
    if chosen is None:
        return []
    pairs = []
    for c in candidates:
        if not c.correct:
            pairs.append(Pair(tuple(prompt), chosen.tokens, c.tokens, "wrong"))
        elif c.length >= long_ratio * chosen.length:
            pairs.append(Pair(tuple(prompt), chosen.tokens, c.tokens, "long"))
    return pairs[:max_pairs] if max_pairs is not None else pairs
