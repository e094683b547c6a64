"""The free-form verifier: does a response's final answer state the reference's value (k15.synthetic.freeform)?

    1. `final_answer(text)`: the response's one well-formed `<answer>` block, else its last line after
       the thinking, tags removed;
    2. `verify_freeform(text, reference)`: the exact checker `freeform.truth` on that answer:
       reward 1 ("ok"), 0 ("wrong"), or 0 with "missing" when the response ends in no text at all.

This is the ground truth of the free-form domain: the learned reward models are trained to imitate it,
and an RL run rewarded by one of them (rewards.rm) still runs it, to count where they disagree.
"""

from __future__ import annotations

import re

from k15.rewards.rule import OK, Verdict, extract_answer
from k15.synthetic.freeform import truth

_TAGS = re.compile(r"</?(?:think|answer)>")


def final_answer(response_text: str) -> str:
    """The answer a response ends with: its one well-formed `<answer>` block, else the last line after its
    thinking, without tags (so "<answer>7</answer><answer>8</answer>" is "7 8", which states no value, not "8")."""
    answer, reason = extract_answer(response_text)
    if reason == OK and not _TAGS.search(answer):
        return answer
    after_thinking = response_text.rsplit("</think>", 1)[-1]
    lines = [line for line in _TAGS.sub(" ", after_thinking).splitlines() if line.strip()]
    return " ".join(lines[-1].split()) if lines else ""


def verify_freeform(response_text: str, reference: str) -> Verdict:
    answer = final_answer(response_text)
    if not answer:
        return Verdict(0.0, "missing", None)
    return Verdict(1.0, OK, answer) if truth(reference, answer) else Verdict(0.0, "wrong", answer)
