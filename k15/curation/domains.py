"""Domain tags, for records whose domain is missing ("" or "auto"): the tag picks the verifier and
shows the balance of the set (k15-paper.md §8, diversity)."""

from __future__ import annotations

import re
from dataclasses import replace

from k15.data.prompts import PromptRecord

UNTAGGED = ("", "auto")
ARITHMETIC_RE = re.compile(r"\s*\d+(?:\s*[-+*/]\s*\d+)*\s*=\s*")
MATH_RE = re.compile(
    r"\\(?:frac|sqrt|boxed|sum|int|cdot|pi|le|ge)|\$|\^|\b(?:solve|equation|integer|polynomial|probability|triangle)\b"
)


def tag_domain(record: PromptRecord) -> str:
    if record.tests:
        return "code"
    if ARITHMETIC_RE.fullmatch(record.prompt):
        return "arithmetic"
    if MATH_RE.search(record.prompt.casefold()):
        return "math"
    return "general"


def tagged(record: PromptRecord) -> PromptRecord:
    """The record with its domain tagged when it had none; unchanged otherwise."""
    return replace(record, domain=tag_domain(record)) if record.domain.strip() in UNTAGGED else record
