"""Verifiable reasoning problems: chains of single-digit + and - operations.

`7-2+4-1=` has answer `8`; its level is the number of operations (1..9). Operands are chosen so that
the running total stays in 0..9, so every intermediate step is a one-digit fact that a tiny model
can learn, while answering a long chain in one shot (no chain of thought) stays hard. That gap is
what RL exploits: longer, step-by-step answers pay off on the hard levels.

Train and held-out problems never overlap: a problem's split is a pure function of its text (a CRC
of the prompt), so any generator with any seed agrees on it.
"""

from __future__ import annotations

import random
import zlib
from dataclasses import dataclass


@dataclass(frozen=True)
class Problem:
    prompt: str  # e.g. "7-2+4-1="
    answer: str  # e.g. "8"
    level: int  # number of operations
    operands: tuple[int, ...]  # (7, 2, 4, 1)
    ops: tuple[str, ...]  # ("-", "+", "-")

    @property
    def id(self) -> str:
        return f"arith/{self.prompt}"

    def steps(self) -> list[tuple[int, str, int, int]]:
        """The chain as (left, op, right, result) steps."""
        out, total = [], self.operands[0]
        for op, b in zip(self.ops, self.operands[1:]):
            result = total + b if op == "+" else total - b
            out.append((total, op, b, result))
            total = result
        return out


def is_heldout(prompt: str, heldout_fraction: float) -> bool:
    return zlib.crc32(prompt.encode()) % 10_000 < heldout_fraction * 10_000


def random_problem(level: int, rng: random.Random) -> Problem:
    total = rng.randint(0, 9)
    operands, ops = [total], []
    for _ in range(level):
        op = rng.choice("+-")
        b = rng.randint(0, 9 - total) if op == "+" else rng.randint(0, total)
        total = total + b if op == "+" else total - b
        operands.append(b)
        ops.append(op)
    prompt = str(operands[0]) + "".join(f"{op}{b}" for op, b in zip(ops, operands[1:])) + "="
    return Problem(prompt, str(total), level, tuple(operands), tuple(ops))


def sample_problems(
    n: int,
    split: str,
    levels: range,
    heldout_fraction: float,
    seed: int,
    distinct: bool = False,
) -> list[Problem]:
    """`n` problems of `split` ("train" or "heldout"), levels drawn uniformly from `levels`.

    With `distinct`, problems do not repeat, and fewer than `n` come back when a level has fewer
    (level 1 has only ~110 problems in all, so ~11 held-out ones).
    """
    if split not in ("train", "heldout"):
        raise ValueError(f"split must be 'train' or 'heldout', got {split!r}")
    want_heldout = split == "heldout"
    rng = random.Random(f"{seed}/{split}/{levels.start}-{levels.stop}")
    out: list[Problem] = []
    seen: set[str] = set()
    attempts = 0
    while len(out) < n and attempts < 200 * n + 10_000:
        attempts += 1
        p = random_problem(rng.choice(levels), rng)
        if is_heldout(p.prompt, heldout_fraction) != want_heldout:
            continue
        if distinct:
            if p.prompt in seen:
                continue
            seen.add(p.prompt)
        out.append(p)
    return out


def heldout_set(levels: range, per_level: int, heldout_fraction: float, seed: int) -> list[Problem]:
    """The evaluation set: up to `per_level` distinct held-out problems for every level."""
    out: list[Problem] = []
    for level in levels:
        out.extend(sample_problems(per_level, "heldout", range(level, level + 1), heldout_fraction, seed, distinct=True))
    return out
