"""The verdict a Chain-of-Thought reward model writes at the end of its reasoning, and how it is read back.

Two spellings, one meaning:
    json    {"correct": true}     the paper's form; for tokenizers that can write `{` and `"`
    plain   correct: true         for the synthetic tokenizer, which has neither (it drops them silently)
`default_format(tok)` picks json when the tokenizer encodes it, else plain.

Reading (`parse_verdict`) accepts either spelling anywhere in the text (plain also with yes / no), and
the LAST verdict wins: a judge that reconsiders ("correct: false ... wait ... correct: true") means
its final word. No verdict at all is reason `unparsed`: counted, and scored as wrong by the caller.
"""

from __future__ import annotations

import json
import re
from typing import NamedTuple

from transformers import PreTrainedTokenizerBase

from k15.tokenizer import unencodable_characters

FORMATS = ("json", "plain")
OK, UNPARSED = "ok", "unparsed"

_PLAIN = re.compile(r"\bcorrect\s*:\s*(true|false|yes|no)\b", re.IGNORECASE)
_JSON_DECODER = json.JSONDecoder()


class Verdict(NamedTuple):
    correct: bool | None  # None when no verdict could be read
    reason: str  # ok | unparsed


def format_verdict(correct: bool, fmt: str) -> str:
    if fmt == "json":
        return json.dumps({"correct": bool(correct)})
    if fmt == "plain":
        return f"correct: {'true' if correct else 'false'}"
    raise ValueError(f"verdict format must be one of {', '.join(FORMATS)}, got {fmt!r}")


def default_format(tok: PreTrainedTokenizerBase) -> str:
    """json when `tok` can write it, else plain (the synthetic tokenizer drops `{` and `"`)."""
    return "plain" if unencodable_characters(tok, format_verdict(True, "json")) else "json"


def resolve_format(fmt: str, tok: PreTrainedTokenizerBase) -> str:
    """`auto` -> default_format(tok); json / plain as given (json is refused when `tok` cannot write it)."""
    if fmt == "auto":
        return default_format(tok)
    if fmt not in FORMATS:
        raise ValueError(f"verdict format must be auto, json or plain, got {fmt!r}")
    if fmt == "json" and default_format(tok) != "json":
        raise ValueError("verdict format json needs `{` and `\"`, which this tokenizer cannot encode; use plain or auto")
    return fmt


def parse_verdict(text: str) -> Verdict:
    """The last verdict in `text`, JSON or plain; Verdict(None, "unparsed") when there is none."""
    found: list[tuple[int, bool]] = []
    covered: list[tuple[int, int]] = []  # JSON spans, so their inside is not read a second time as plain
    for start in (m.start() for m in re.finditer(r"\{", text)):
        if any(a <= start < b for a, b in covered):
            continue
        try:
            obj, end = _JSON_DECODER.raw_decode(text, start)
        except ValueError:
            continue
        covered.append((start, end))
        if isinstance(obj, dict) and isinstance(obj.get("correct"), bool):
            found.append((start, obj["correct"]))
    for m in _PLAIN.finditer(text):
        if not any(a <= m.start() < b for a, b in covered):
            found.append((m.start(), m.group(1).lower() in ("true", "yes")))
    if not found:
        return Verdict(None, UNPARSED)
    return Verdict(max(found)[1], OK)
