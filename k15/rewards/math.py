"""The math verifier: take the final answer from the fixed format, decide equivalence with math-verify.

The answer is the content of the response's final `<answer>` block (a `\\boxed{...}` or `$...$`
inside it is unwrapped). math-verify (sympy underneath) then decides whether it equals the gold
answer: 1/2 = 0.5 = \\frac{1}{2}, (a+2)(a-2) = a^2-4, {1,2} = {2,1}, [0,1) != (0,1].

The answer is parsed as ONE expression. Parsing free text instead lets hedges through: math-verify
alone reads "3 or 5" and "3, but it is 5" as 5; as one expression they are {3, 5} and wrong.
Known hacks get their own reason code, counted like the others:
    multiple      several answer blocks, several \\boxed, several $...$ spans in the answer
    in_reasoning  an answer only inside <think>...</think> (or after an unclosed <think>)
    empty         an empty answer;  missing / trailing: as in the rule verifier
    unparsable    an answer that is not a math expression;  too_long: over `max_answer_chars`
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass


from k15.errors import DataError
from k15.rewards.rule import ANSWER_RE, EMPTY, MISSING, MULTIPLE, OK, TRAILING, WRONG, Verdict, extract_answer

IN_REASONING, UNPARSABLE, TOO_LONG = "in_reasoning", "unparsable", "too_long"
THINK_RE = re.compile(r"<think>.*?(?:</think>|$)", re.DOTALL)
BOXED = "\\boxed{"
DELIMITERS = [("$$", "$$"), ("$", "$"), ("\\(", "\\)"), ("\\[", "\\]")]


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


def in_reasoning(response: str, start: int) -> bool:
    return any(m.start() <= start < m.end() for m in THINK_RE.finditer(response))


def extract_final_answer(response: str) -> tuple[str | None, str]:
    """The content of the final answer block and a reason code."""
    blocks = list(ANSWER_RE.finditer(response))
    answer, reason = extract_answer(response)
    reasoning = "".join(m.group() for m in THINK_RE.finditer(response))
    if reason in (MISSING, TRAILING) and (any(in_reasoning(response, m.start()) for m in blocks) or BOXED in reasoning):
        return None, IN_REASONING
    if answer is not None and in_reasoning(response, blocks[0].start()):
        return None, IN_REASONING  # "<think>... <answer>5</answer>" with the think never closed
    return answer, reason


def boxed_contents(text: str) -> list[str]:
    out, pos = [], 0
    while (start := text.find(BOXED, pos)) >= 0:
        depth, i = 1, start + len(BOXED)
        while i < len(text) and depth:
            depth += {"{": 1, "}": -1}.get(text[i], 0)
            i += 1
        out.append(text[start + len(BOXED) : i - 1])
        pos = i
    return out


def unwrap(answer: str) -> tuple[str | None, str]:
    """The bare expression inside an answer: one \\boxed{...} or one pair of math delimiters removed."""
    boxed = boxed_contents(answer)
    if len(boxed) > 1:
        return None, MULTIPLE
    text = (boxed[0] if boxed else answer).strip()
    for left, right in DELIMITERS:
        if len(text) > len(left) + len(right) and text.startswith(left) and text.endswith(right):
            text = text[len(left) : -len(right)].strip()
            break
    if "$" in text:  # "$3$ or $5$"
        return None, MULTIPLE
    return (text, OK) if text else (None, EMPTY)


def _timeout(cfg: MathConfig) -> int | None:
    return cfg.timeout_seconds if threading.current_thread() is threading.main_thread() else None


def parse_gold(gold: str, cfg: MathConfig) -> list:
    text, _ = unwrap(gold)
    parsed = _math_verify().parse(f"${text}$", _extraction(), parsing_timeout=_timeout(cfg)) if text else []
    if not parsed:
        raise DataError(f"cannot parse the gold answer {gold!r} as a math expression")
    return parsed


def verify_math(response: str, gold: str, cfg: MathConfig | None = None) -> Verdict:
    cfg = cfg or MathConfig()
    answer, reason = extract_final_answer(response)
    if answer is None:
        return Verdict(0.0, reason, None)
    if len(answer) > cfg.max_answer_chars:
        return Verdict(0.0, TOO_LONG, None)
    text, reason = unwrap(answer)
    if text is None:
        return Verdict(0.0, reason, answer)
    gold_parsed = parse_gold(gold, cfg)
    parsed = _math_verify().parse(f"${text}$", _extraction(), parsing_timeout=_timeout(cfg))
    if not parsed:
        return Verdict(0.0, UNPARSABLE, text)
    correct = _math_verify().verify(gold_parsed, parsed, float_rounding=cfg.float_rounding, timeout_seconds=_timeout(cfg))
    return Verdict(1.0, OK, text) if correct else Verdict(0.0, WRONG, text)
