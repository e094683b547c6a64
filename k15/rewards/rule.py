"""The rule verifier of the synthetic world: parse the final answer, compare it exactly.

A response must end with exactly one `<answer>...</answer>` block. Anything else scores 0 and gets
a reason code, so that malformed answers are counted, not silently mixed in with wrong ones.
"""

from __future__ import annotations

import re
from typing import NamedTuple

ANSWER_RE = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)

OK, WRONG, MISSING, MULTIPLE, EMPTY, TRAILING = "ok", "wrong", "missing", "multiple", "empty", "trailing"


class Verdict(NamedTuple):
    reward: float
    reason: str  # ok | wrong | missing | multiple | empty | trailing
    answer: str | None


def extract_answer(response: str) -> tuple[str | None, str]:
    """The final answer and a reason code ("ok" when exactly one well-formed answer block ends it)."""
    blocks = ANSWER_RE.findall(response)
    if not blocks:
        return None, MISSING
    if len(blocks) > 1:
        return None, MULTIPLE
    if response.rstrip().endswith("</answer>") is False:
        return None, TRAILING
    answer = blocks[0].strip()
    if not answer:
        return None, EMPTY
    return answer, OK


def verify(response: str, expected: str) -> Verdict:
    answer, reason = extract_answer(response)
    if answer is None:
        return Verdict(0.0, reason, None)
    if answer == expected.strip():
        return Verdict(1.0, OK, answer)
    return Verdict(0.0, WRONG, answer)
