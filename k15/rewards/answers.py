"""Find the final answer in a response, in the format its prompt set uses, with a reason code.

Formats (`rewards.math.answer_format`, or a prompt's own `extra["answer_format"]`):
    answer_tag  the <answer>...</answer> block: exactly one, ending the response (k15's own format)
    boxed       the final \\boxed{...} (or \\fbox{...}), nested braces handled: MATH and R1-style models
    gsm8k       the `#### N` line ending the response: GSM8K solutions
    answer_is   "The answer is X" / "the final answer is X" (any case): X up to the end of its sentence
                or line, a trailing period removed; X may be display math on the next line
    auto        the first of answer_tag, boxed, gsm8k, answer_is that finds anything outside the
                reasoning decides (the default): its answer, or its refusal (multiple, empty, trailing,
                too_long). Only one answer ever counts, so writing answers in several formats gains
                nothing, and prose such as "I'm not sure the answer is right" before a \\boxed{} costs
                nothing. The other formats read the text outside answer blocks, and a #### line counts
                only when it holds a number: "#### Step 2" is a markdown heading
Every answer is then unwrapped: one \\boxed{...} or one pair of $...$, $$...$$, \\(...\\), \\[...\\]
removed. In boxed, gsm8k and answer_is a plain number loses its currency sign, thousands commas and
final period ("$1,234." -> "1234"), so that its $ is not read as a second math span (a hedge).

Reason codes (anything but ok scores 0, and each is counted):
    ok            exactly one final answer
    multiple      several different answers in the deciding format (boxes, #### lines, "the answer is",
                  answer blocks), or a hedge inside one answer ("$3$ or $5$")
    in_reasoning  an answer only inside the reasoning
    empty         \\boxed{}, an empty #### line, an empty answer block
    missing       no answer at all
    trailing      text after the answer block (answer_tag) or after the #### line (gsm8k)
    too_long      an answer over `max_chars` (math-verify could take long to parse it)
    unparsable    an answer holding a \\boxed{ that never closes (math.py also uses it)

The same answer written twice (equal as text after unwrapping, spacing aside) is one answer, not a
hedge: MATH solutions and summaries after the reasoning often repeat it. answer_tag keeps its stricter
rule from before the other formats existed: a second block is `multiple` even when identical.

Reasoning is each <think>...</think>, an unclosed <think> to the end, and the text before a </think>
that no <think> opened (chat templates of R1-style models put the <think> in the prompt).
"""

from __future__ import annotations

import bisect
import re
from typing import NamedTuple

from k15.errors import ConfigError
from k15.rewards.rule import EMPTY, MISSING, MULTIPLE, OK, TRAILING

IN_REASONING, TOO_LONG, UNPARSABLE = "in_reasoning", "too_long", "unparsable"
FORMATS = ("auto", "answer_tag", "boxed", "gsm8k", "answer_is")
GOLD_SOURCES = ("none", "gsm8k", "boxed")

THINK_RE = re.compile(r"<think>.*?(?:</think>|$)", re.DOTALL)
TAG_RE = re.compile(r"</?(?:think|answer)>")
BOX_RE = re.compile(r"\\(?:boxed|fbox)\s*\{")
BRACE_RE = re.compile(r"\\.|[{}]", re.DOTALL)  # an escaped character (\{ is a literal brace) or a brace
SENTENCE_STOP_RE = re.compile(r"[\n.$\\]")
GSM8K_RE = re.compile(r"^[ \t]*####(.*)$", re.MULTILINE)
# the rest of the line, or display math starting the next line ("The final answer is:\n\[\boxed{5}\]")
ANSWER_IS_RE = re.compile(r"\bthe\s+(?:final\s+)?answer\s+is\b[ \t]*:?[ \t]*(?:\n\s*(?=\$|\\\[|\\\(|\\boxed|\\fbox))?",
                          re.IGNORECASE)
PLAIN_NUMBER_RE = re.compile(r"(?:\\?\$)?\s*(-?)\s*(?:\\?\$)?\s*(\d+(?:,\d{3})*(?:\.\d+)?)\.?")
# math delimiters, longest first
DELIMITERS = [("$$", "$$"), ("$", "$"), ("\\(", "\\)"), ("\\[", "\\]")]
INLINE = ("$", "\\(")


class Found(NamedTuple):
    answer: str | None  # the unwrapped answer; None unless reason is "ok"
    reason: str
    format: str  # the format that decided; in auto, "auto" when none matched or several disagreed
    text: str | None = None  # a refused answer's text, for the record ("$3$ or $5$")


def check_format(name: str, what: str = "answer_format") -> str:
    if name not in FORMATS:
        raise ConfigError(f"{what} must be one of {', '.join(FORMATS)}, got {name!r}")
    return name


def find_answer(response: str, answer_format: str = "auto", max_chars: int | None = None) -> Found:
    """The final answer of `response` read in `answer_format`, and why it is refused if it is."""
    check_format(answer_format)
    if answer_format == "answer_tag":
        return _answer_tag(response, max_chars)
    outside, reasoning = split_reasoning(response)
    if answer_format == "auto":  # answer blocks belong to answer_tag, whose unwrapping reads a box or $ inside them
        outside, reasoning = _without_blocks(outside), _without_blocks(reasoning)
    # the tags left are line breaks: "<answer>#### 5</answer>", "<think>#### 5" in the reasoning
    outside, reasoning = TAG_RE.sub("\n", outside), TAG_RE.sub("\n", reasoning)
    if answer_format != "auto":
        return _read(answer_format, outside, reasoning, max_chars)
    results = [_answer_tag(response, max_chars)]
    results += [_read(name, outside, reasoning, max_chars, auto=True) for name in ("boxed", "gsm8k", "answer_is")]
    deciding = [f for f in results if f.reason not in (IN_REASONING, MISSING)]  # in priority order
    if deciding:
        return deciding[0]
    hidden = [f for f in results if f.reason == IN_REASONING]
    return hidden[0] if hidden else Found(None, MISSING, "auto")


def gold_answer(text: str, answer_from: str) -> str | None:
    """The gold answer inside a dataset's answer field; None when there is none to take.

    none: the text itself, stripped;  gsm8k: the value after the last ####, commas removed;
    boxed: the content of the last \\boxed{...} (a MATH solution).
    """
    if answer_from == "none":
        return text.strip() or None
    if answer_from == "gsm8k":
        if "####" not in text:
            return None
        lines = text.rsplit("####", 1)[1].strip().splitlines()
        value = lines[0].strip() if lines else ""
        return plain_number(value) or value.replace(",", "") or None
    if answer_from == "boxed":
        contents = [content for _, _, content in boxes(text)]
        return (contents[-1].strip() or None) if contents else None
    raise ConfigError(f"answer_from must be one of {', '.join(GOLD_SOURCES)}, got {answer_from!r}")


# ---------------------------------------------------------------------------------------------
# Reasoning


def reasoning_spans(response: str) -> list[tuple[int, int]]:
    spans = [m.span() for m in THINK_RE.finditer(response)]
    close = response.find("</think>")
    if close >= 0 and not any(start <= close < end for start, end in spans):
        spans.insert(0, (0, close + len("</think>")))  # the <think> was in the prompt
    return spans


def split_reasoning(response: str) -> tuple[str, str]:
    """(the text outside the reasoning, the reasoning); a line break stands for each cut."""
    outside, reasoning, pos = [], [], 0
    for start, end in reasoning_spans(response):
        outside.append(response[pos:start])
        reasoning.append(response[start:end])
        pos = end
    outside.append(response[pos:])
    return "\n".join(outside), "\n".join(reasoning)


def _inside(spans: list[tuple[int, int]], pos: int) -> bool:
    k = bisect.bisect_right(spans, (pos, float("inf"))) - 1  # spans are sorted and do not overlap
    return k >= 0 and spans[k][0] <= pos < spans[k][1]


# ---------------------------------------------------------------------------------------------
# Formats


def answer_blocks(text: str) -> list[tuple[int, int, str]]:
    """(start, end, content) of each <answer>...</answer>, as the rule verifier's ANSWER_RE finds them, but
    in one pass: the regex rescans to the end for each unclosed <answer>, quadratic on a degenerate response."""
    out, pos = [], 0
    while (start := text.find("<answer>", pos)) >= 0:
        close = text.find("</answer>", start + len("<answer>"))
        if close < 0:
            break
        out.append((start, close + len("</answer>"), text[start + len("<answer>") : close]))
        pos = close + len("</answer>")
    return out


def _without_blocks(text: str) -> str:
    pieces, pos = [], 0
    for start, end, _ in answer_blocks(text):
        pieces.append(text[pos:start])
        pos = end
    return "\n".join(pieces + [text[pos:]])


def _answer_tag(response: str, max_chars: int | None) -> Found:
    """The rule verifier's rule (k15.rewards.rule.extract_answer: exactly one block, ending the response),
    plus: a block (or a box) only in the reasoning is in_reasoning."""
    blocks = answer_blocks(response)
    spans = reasoning_spans(response)
    in_thought = any(_inside(spans, start) for start, _, _ in blocks)
    if not blocks or (len(blocks) == 1 and not response.rstrip().endswith("</answer>")):  # missing, trailing
        if in_thought or BOX_RE.search(split_reasoning(response)[1]):
            return Found(None, IN_REASONING, "answer_tag")
        return Found(None, TRAILING if blocks else MISSING, "answer_tag")
    if len(blocks) > 1:
        return Found(None, MULTIPLE, "answer_tag")
    answer = blocks[0][2].strip()
    if not answer:
        return Found(None, EMPTY, "answer_tag")
    if in_thought:  # "<think>... <answer>5</answer>" with the think never closed
        return Found(None, IN_REASONING, "answer_tag")
    return _final(answer, "answer_tag", max_chars)


def boxes(text: str) -> list[tuple[int, int, str]]:
    """(start, end, content) of each outermost \\boxed{...} that closes, in order."""
    out: list[tuple[int, int, str]] = []
    for start, (content_start, end) in sorted(_all_boxes(text).items()):
        if not out or start >= out[-1][1]:
            out.append((start, end, text[content_start : end - 1]))
    return out


def _all_boxes(text: str) -> dict[int, tuple[int, int]]:
    """Every box that closes, nested ones too: start -> (content start, end). One pass, so a
    degenerate response of thousands of unclosed boxes costs no more than reading it."""
    box_at = {m.end() - 1: m.start() for m in BOX_RE.finditer(text)}  # the box's "{" -> its start
    found, open_braces = {}, []
    for m in BRACE_RE.finditer(text):
        if m.group() == "{":
            open_braces.append(m.start())
        elif m.group() == "}" and open_braces:
            brace = open_braces.pop()
            if brace in box_at:
                found[box_at[brace]] = (brace + 1, m.end())
    return found


def _boxed(text: str, auto: bool) -> list[tuple[str, int]]:
    return [(content, end) for _, end, content in boxes(text)]


def _gsm8k_lines(text: str, auto: bool) -> list[tuple[str, int]]:
    lines = [(m.group(1).strip(), m.end()) for m in GSM8K_RE.finditer(text)]
    # in auto, "#### Step 2" is a markdown heading: only a number (or nothing) counts as an answer
    return [(value, end) for value, end in lines if not auto or not value or plain_number(value)]


def _answer_is(text: str, auto: bool) -> list[tuple[str, int]]:
    found, spans, pos = [], _MathSpans(text), 0
    while m := ANSWER_IS_RE.search(text, pos):
        end = spans.sentence_end(m.end())
        value = text[m.end() : end].strip().rstrip(".").strip()
        if value.startswith("**") and value.endswith("**"):  # markdown bold
            value = value[2:-2].strip()
        if value:  # "... what the answer is." states no answer
            found.append((value, end))
        pos = max(end, m.end())  # a phrase inside the previous answer is part of it: each character read once
    return found


class _MathSpans:
    """Where a math span opening at a position closes: $...$, $$...$$, \\(...\\), \\[...\\], boxes.
    Closers are looked up by bisection, so reading a sentence costs its length times log n."""

    def __init__(self, text: str):
        self.text = text
        self.boxes = {start: end for start, (_, end) in _all_boxes(text).items()}
        self.at = {token: [m.start() for m in re.finditer(re.escape(token), text)] for _, token in DELIMITERS}
        # inline math ends on its line and inside its sentence: in "$18. She pays $5" the $ are prices
        self.at["stop"] = [m.start() for m in re.finditer(r"\n|\.\s", text)]

    def _next(self, token: str, pos: int) -> int | None:
        where = self.at[token]
        k = bisect.bisect_left(where, pos)
        return where[k] if k < len(where) else None

    def span_end(self, i: int) -> int | None:
        if i in self.boxes:
            return self.boxes[i]
        for left, right in DELIMITERS:
            if self.text.startswith(left, i):
                close = self._next(right, i + len(left))
                stop = self._next("stop", i)
                if close is not None and not (left in INLINE and stop is not None and stop < close):
                    return close + len(right)
        return None

    def sentence_end(self, pos: int) -> int:
        """Where the sentence or line from `pos` ends (a period before a space, or a line break)."""
        i = pos
        while m := SENTENCE_STOP_RE.search(self.text, i):  # the next character that could end or open something
            i = m.start()
            skip = self.span_end(i)
            if skip is not None:
                i = skip
            elif m.group() == "\n" or (m.group() == "." and (i + 1 == len(self.text) or self.text[i + 1].isspace())):
                return i
            else:
                i += 1
        return len(self.text)


READERS = {"boxed": _boxed, "gsm8k": _gsm8k_lines, "answer_is": _answer_is}  # each: [(value, end)] in order


def _read(name: str, outside: str, reasoning: str, max_chars: int | None, auto: bool = False) -> Found:
    """One of boxed, gsm8k, answer_is: every answer outside the reasoning must be the same one."""
    found = READERS[name](outside, auto)
    if not found:
        return Found(None, IN_REASONING if READERS[name](reasoning, auto) else MISSING, name)
    if len({_key(_unwrap_value(value)[0] or value) for value, _ in found}) > 1:
        return Found(None, MULTIPLE, name)
    value, end = found[-1]
    if name == "gsm8k" and outside[end:].strip():
        return Found(None, TRAILING, name)
    return _final(value, name, max_chars)


def _final(raw: str, name: str, max_chars: int | None) -> Found:
    if max_chars is not None and len(raw) > max_chars:
        return Found(None, TOO_LONG, name)
    answer, reason = unwrap(raw) if name == "answer_tag" else _unwrap_value(raw)
    return Found(answer, reason, name) if answer is not None else Found(None, reason, name, raw or None)


# ---------------------------------------------------------------------------------------------
# Unwrapping


def unwrap(answer: str) -> tuple[str | None, str]:
    """The bare expression inside an answer: one \\boxed{...} or one pair of math delimiters removed."""
    found = boxes(answer)
    if len(found) > 1:
        return None, MULTIPLE
    if not found and BOX_RE.search(answer):
        return None, UNPARSABLE  # a box that never closes
    text = (found[0][2] if found else answer).strip()
    for left, right in DELIMITERS:
        if len(text) > len(left) + len(right) and text.startswith(left) and text.endswith(right):
            text = text[len(left) : -len(right)].strip()
            break
    if "$" in text:  # "$3$ or $5$"
        return None, MULTIPLE
    return (text, OK) if text else (None, EMPTY)


def _unwrap_value(raw: str) -> tuple[str | None, str]:
    """unwrap, for the formats written in prose: a final period goes, a plain number is normalized."""
    value = raw.strip().rstrip(".")
    if not value.strip("\\$ "):  # "#### $": a currency sign alone
        return None, EMPTY
    number = plain_number(value)
    if number is not None:
        return number, OK
    text, reason = unwrap(value)
    if text is None:
        return None, reason
    text = text.rstrip(".").strip()  # "$\frac{3}{4}.$"
    return (plain_number(text) or text, OK) if text else (None, EMPTY)


def plain_number(text: str) -> str | None:
    """"$1,234" -> "1234", "-$5" -> "-5", "72." -> "72"; None when `text` is not such a number."""
    m = PLAIN_NUMBER_RE.fullmatch(text.strip())
    return m.group(1) + m.group(2).replace(",", "") if m else None


def _key(answer: str) -> str:
    """What two answers share when they are the same answer written twice."""
    return plain_number(answer) or re.sub(r"\s+", " ", answer).strip()
