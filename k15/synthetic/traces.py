"""Chain-of-thought traces for arithmetic problems, in two styles.

short:  `<answer>8</answer>`                                 -- the answer in one shot
long:   `<think>3:7-2=5,5+4=9,9-1=8</think><answer>8</answer>` -- plan (number of steps), then every step

In a long trace each step is checked as it is written: at rate `error_rate` a step is first written
with a wrong result, then noticed and redone (`5+4=7 wait 5+4=9`). The wrong digit is shown but not
trained on (its loss mask is 0), so the model learns to *notice and correct* a wrong step -- which is
what happens when sampling at temperature 1 picks a wrong digit -- without learning to make errors.

A response is a list of `Piece`s: text with a flag saying whether it counts in the SFT loss.
"""

from __future__ import annotations

import random
from typing import NamedTuple

from k15.synthetic.arithmetic import Problem

THINK, END_THINK = "<think>", "</think>"
ANSWER, END_ANSWER = "<answer>", "</answer>"
WAIT = " wait "


class Piece(NamedTuple):
    text: str
    trained: bool = True


def answer_block(answer: str) -> str:
    return f"{ANSWER}{answer}{END_ANSWER}"


def short_trace(problem: Problem) -> list[Piece]:
    return [Piece(answer_block(problem.answer))]


def long_trace(problem: Problem, rng: random.Random, error_rate: float = 0.0) -> list[Piece]:
    pieces = [Piece(f"{THINK}{problem.level}:")]
    for i, (a, op, b, c) in enumerate(problem.steps()):
        sep = "," if i else ""
        if rng.random() < error_rate:
            wrong = rng.choice([d for d in range(10) if d != c])
            pieces += [Piece(f"{sep}{a}{op}{b}="), Piece(str(wrong), trained=False), Piece(f"{WAIT}{a}{op}{b}={c}")]
        else:
            pieces.append(Piece(f"{sep}{a}{op}{b}={c}"))
    pieces.append(Piece(END_THINK + answer_block(problem.answer)))
    return pieces


def make_trace(problem: Problem, style: str, rng: random.Random, error_rate: float = 0.0) -> list[Piece]:
    if style == "short":
        return short_trace(problem)
    if style == "long":
        return long_trace(problem, rng, error_rate)
    raise ValueError(f"unknown trace style {style!r} (short, long)")


def text_of(pieces: list[Piece]) -> str:
    return "".join(p.text for p in pieces)
