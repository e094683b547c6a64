"""The math verifier: find the final answer in the response's format, decide equivalence with math-verify.

k15.rewards.answers finds the answer (formats: answer_tag, boxed, gsm8k, answer_is, auto) and refuses
hedges, answers only in the reasoning, empty or trailing ones with a reason code. math-verify (sympy
underneath) then decides whether it equals the gold answer: 1/2 = 0.5 = \\frac{1}{2},
(a+2)(a-2) = a^2-4, {1,2} = {2,1}, [0,1) != (0,1].

The answer is parsed as ONE expression. Parsing free text instead lets hedges through: math-verify
alone reads "3 or 5" and "3, but it is 5" as 5; as one expression they are {3, 5} and wrong.
Reason codes: those of k15.rewards.answers (multiple, in_reasoning, empty, missing, trailing,
too_long, unparsable), then unparsable (not a math expression), wrong and ok.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from k15.errors import DataError
from k15.rewards.answers import IN_REASONING, TOO_LONG, UNPARSABLE, check_format, find_answer, unwrap
from k15.rewards.rule import OK, WRONG, Verdict

__all__ = ["IN_REASONING", "TOO_LONG", "UNPARSABLE", "MathConfig", "parse_gold", "verify_math"]


def _math_verify():
    """math-verify (and sympy under it) load on first use, so the config schema can import this module cheaply."""
    import math_verify

    return math_verify


def _extraction() -> list:
    mv = _math_verify()
    return [mv.LatexExtractionConfig(), mv.ExprExtractionConfig()]


@dataclass
class MathConfig:
    float_rounding: int = 6  # decimals compared by math-verify
    timeout_seconds: int = 5  # per parse / comparison; math-verify times out with SIGALRM: main thread only
    max_answer_chars: int = 1000
    # how responses give their answer: auto | answer_tag | boxed | gsm8k | answer_is (k15/rewards/answers.py);
    # a prompt's own extra["answer_format"] wins over this
    answer_format: str = "auto"

    def __post_init__(self) -> None:
        check_format(self.answer_format, "rewards.math.answer_format")


def _timeout(cfg: MathConfig) -> int | None:
    return cfg.timeout_seconds if threading.current_thread() is threading.main_thread() else None


def parse_gold(gold: str, cfg: MathConfig) -> list:
    text, _ = unwrap(gold)
    parsed = _math_verify().parse(f"${text}$", _extraction(), parsing_timeout=_timeout(cfg)) if text else []
    if not parsed:
        raise DataError(f"cannot parse the gold answer {gold!r} as a math expression")
    return parsed


def verify_math(response: str, gold: str, cfg: MathConfig | None = None, answer_format: str | None = None) -> Verdict:
    """`answer_format` (a prompt set's own) wins over `cfg.answer_format` when given."""
    cfg = cfg or MathConfig()
    found = find_answer(response, answer_format or cfg.answer_format, cfg.max_answer_chars)
    if found.answer is None:
        return Verdict(0.0, found.reason, found.text)
    gold_parsed = parse_gold(gold, cfg)
    parsed = _math_verify().parse(f"${found.answer}$", _extraction(), parsing_timeout=_timeout(cfg))
    if not parsed:
        return Verdict(0.0, UNPARSABLE, found.answer)
    correct = _math_verify().verify(gold_parsed, parsed, float_rounding=cfg.float_rounding, timeout_seconds=_timeout(cfg))
    return Verdict(1.0, OK, found.answer) if correct else Verdict(0.0, WRONG, found.answer)
