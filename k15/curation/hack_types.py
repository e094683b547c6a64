"""Prompt types whose answers are easy to guess (k15-paper.md §8): multiple choice, true/false, proof.

A record's type comes from a type field when it has one (`type`, `question_type`, `problem_type`),
else from its text: option labels such as "(a) ... (b)", "true or false", "prove" / "show that".
A true/false answer ("true", "false") marks the type too. Yes/no questions are left to the no-CoT
guessing filter, as the paper does for general QA. Multi-part questions labelled (a), (b) look like
multiple choice and are dropped too: they have no single final answer to verify either.
"""

from __future__ import annotations

import re

from k15.data.prompts import PromptRecord

MULTIPLE_CHOICE, TRUE_FALSE, PROOF = "multiple_choice", "true_false", "proof"
HACK_TYPES = (MULTIPLE_CHOICE, TRUE_FALSE, PROOF)
TYPE_FIELDS = ("type", "question_type", "problem_type")
FIELD_VALUES = {
    MULTIPLE_CHOICE: {"multiple_choice", "multiple-choice", "multiple choice", "mc", "mcq", "choice"},
    TRUE_FALSE: {"true_false", "true/false", "true-false", "tf", "boolean", "judgement", "judgment"},
    PROOF: {"proof", "prove", "theorem", "proof-based", "proof_based"},
}
TEXT_PATTERNS = {
    MULTIPLE_CHOICE: [
        r"\(\s*a\s*\).*\(\s*b\s*\)",  # (a) ... (b)
        r"(?:^|\s)a\s*[).]\s.*\sb\s*[).]\s",  # a) ... b)  /  a. ... b.
        r"\bwhich of the following\b",
        r"\b(?:choose|select|pick) (?:one|the (?:correct|best|right))\b",
        r"\b(?:options|choices|answer choices)\s*:",
    ],
    TRUE_FALSE: [
        r"\btrue or false\b",
        r"\btrue\s*/\s*false\b",
        r"\bis (?:this|the following) (?:statement )?(?:true|correct)\b",
    ],
    PROOF: [r"\bprove\b", r"\bshow that\b", r"\bdemonstrate that\b", r"\bgive a proof\b", r"\bproof\b"],
}
COMPILED = {kind: [re.compile(p, re.DOTALL) for p in patterns] for kind, patterns in TEXT_PATTERNS.items()}


def hack_type(record: PromptRecord) -> str | None:
    """MULTIPLE_CHOICE, TRUE_FALSE, PROOF, or None for a prompt of none of these types."""
    for name in TYPE_FIELDS:
        value = record.extra.get(name)
        if isinstance(value, str):
            for kind, values in FIELD_VALUES.items():
                if value.strip().casefold() in values:
                    return kind
    text = record.prompt.casefold()
    for kind, patterns in COMPILED.items():
        if any(p.search(text) for p in patterns):
            return kind
    if record.answer.strip().casefold() in ("true", "false"):
        return TRUE_FALSE
    return None
