"""Duplicate prompts: the same text up to case and whitespace (and the same images) is one prompt."""

from __future__ import annotations

import unicodedata

from k15.data.prompts import PromptRecord


def prompt_key(record: PromptRecord) -> tuple[str, tuple[str, ...]]:
    text = unicodedata.normalize("NFKC", record.prompt).casefold()
    return "".join(text.split()), record.images


def dedup(records: list[PromptRecord]) -> tuple[list[PromptRecord], list[PromptRecord]]:
    """(kept, removed): the first record of every key is kept."""
    seen: set = set()
    kept, removed = [], []
    for r in records:
        key = prompt_key(r)
        (removed if key in seen else kept).append(r)
        seen.add(key)
    return kept, removed
