"""Free-form answers in the synthetic world: one value, many surface forms, and a checker that reads them all.

Where the rule verifier compares strings, a free-form answer needs judgement: "eight apples",
"16/2", "five plus three" and "so the answer is 8." all state 8, while "7.5", "8 pears" or "5-3"
do not. This is the domain the learned reward models (k15.reward_models) are trained to judge.

Steps:
    1. a question is an arithmetic chain (k15.synthetic.arithmetic), bare ("7-2+4-1=") or asking
       for a count of things ("7-2+4-1= how many apples?"); its split is the chain's hash split,
       so held-out questions stay held out;
    2. its reference answer is the value in digits or words, with the unit when the question asks for one;
    3. a response states a value in one of the surface FORMS (digits, words, an expression in
       symbols or words, a fraction, a decimal; with or without the unit; bare or in a sentence):
       the right value, or a close but wrong one (WRONG_KINDS: off by one, an intermediate result
       of the chain, a near decimal, a flipped operator, swapped digits, the right number in other units);
    4. `truth(reference, response)` parses both with exact rational arithmetic (fractions.Fraction)
       and says whether they state the same value; units must agree when both give one
       ("apple" and "apples" are one unit).

The checker is the ground truth: it labels the reward models' training data and judges their
verdicts. It is never a reward model's input. Everything written here uses only characters the
synthetic tokenizer encodes (lowercase letters, digits, `+-*/=,;:.()?! `).
"""

from __future__ import annotations

import operator
import random
import re
from dataclasses import dataclass
from fractions import Fraction

from k15.synthetic.arithmetic import Problem, sample_problems

UNITS = ("apples", "pears", "coins", "books", "cats", "eggs")
NUMBER_WORDS = ("zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
                "sixteen seventeen eighteen nineteen twenty").split()
OP_WORDS = {"plus": "+", "minus": "-", "times": "*", "over": "/"}
_WORD_OF_OP = {"+": "plus", "-": "minus", "*": "times", "/": "over"}

BASES = ("digits", "words", "expression", "word_expression", "fraction", "decimal")
# A form is a base, optionally +unit and +sentence: "words+unit+sentence" is "so the answer is eight apples."
FORMS = tuple(f"{b}{u}{s}" for b in BASES for u in ("", "+unit") for s in ("", "+sentence"))
WRONG_KINDS = ("off_by_one", "intermediate", "near_decimal", "wrong_op", "digit_swap", "wrong_unit")

SENTENCES = ("so the answer is {}.", "the answer is {}", "it is {}.", "that makes {} in all.", "we get {}.",
             "answer: {}", "there are {} left.")
_LEAD_IN = re.compile(r"^(?:(?:so|then|thus|hence),? )?(?:the answer is|the result is|answer:|it is|that is|"
                      r"that makes|we get|i get|there are|there is|we have)\s+")
_TAIL = re.compile(r"\s*(?:in all|in total|left|now|altogether)?\s*[.!]*$")
_TOKEN = re.compile(r"\d+(?:\.\d+)?|[-+*/()]")


@dataclass(frozen=True)
class FreeformProblem:
    problem: Problem  # the chain; its prompt decides the split
    unit: str | None  # "apples", or None for a bare chain
    question: str  # "7-2+4-1= how many apples?"
    reference: str  # "eight apples"

    @property
    def value(self) -> Fraction:
        return Fraction(int(self.problem.answer))

    @property
    def id(self) -> str:
        return f"free/{self.question}"


def read_answer(text: str) -> tuple[Fraction, str | None] | None:
    """(value, unit) stated by an answer text, or None when it states no value this checker can read.

    The sentence around it goes first (a known lead-in, then a trailing "in all" / "left" / "."), then a
    last word that is neither a number nor an operator is the unit, and the rest is an expression in
    digits, decimals, number words and operators (symbols or words), evaluated exactly.
    """
    reading = _read(text)
    return None if reading is None else reading[1:]


def _read(text: str) -> tuple[str, Fraction, str | None] | None:
    """(the expression in symbols, its value, the unit): "five plus three apples" -> ("5+3", 8, "apples")."""
    core = _TAIL.sub("", _LEAD_IN.sub("", text.strip().lower()))
    words = core.split()
    unit = None
    if len(words) > 1 and words[-1].isalpha() and words[-1] not in NUMBER_WORDS and words[-1] not in OP_WORDS:
        unit = _plural(words.pop())  # "apple" and "apples" are one unit
    pieces = []
    for w in words:
        if w in NUMBER_WORDS:
            pieces.append(str(NUMBER_WORDS.index(w)))
        elif w in OP_WORDS:
            pieces.append(OP_WORDS[w])
        elif re.fullmatch(r"[\d.+\-*/()]+", w):
            pieces.append(w)
        else:
            return None  # a word this checker does not know: no value is stated
    value = _evaluate(" ".join(pieces))
    return None if value is None else ("".join(pieces), value, unit)


def truth(reference: str, response: str) -> bool:
    """Whether `response` states the reference's value (and unit, when both give one). The ground truth:
    it labels data and judges reward models, and is never their input. A reference it cannot read is
    a bug in the data (ValueError); a response it cannot read is wrong."""
    ref = read_answer(reference)
    if ref is None:
        raise ValueError(f"reference answer {reference!r} states no readable value")
    got = read_answer(response)
    if got is None:
        return False
    if got[0] != ref[0]:
        return False
    return ref[1] is None or got[1] is None or ref[1] == got[1]


def canonical(value: Fraction, unit: str | None = None) -> str:
    """The value as the rationale writes it: "8", "-1", "7.9", "23/4" (no terminating decimal), "8 apples"."""
    if value.denominator == 1:
        number = str(value.numerator)
    else:
        number = _decimal(value) or f"{value.numerator}/{value.denominator}"
    return f"{number} {unit}" if unit else number


def rationale(reference: str, response: str) -> str:
    """A short judgement a CoT reward model learns to write before its verdict. Each answer is reduced
    to one canonical value (its computation shown in symbols when it has one); then the two values, and
    the two units when both give one, are written side by side, so the comparison is between neighbours:
        "ref 8 apples, resp 5+3=8, 8 vs 8, same."
        "ref 8, resp 7.90=7.9, 8 vs 7.9, different."
        "ref 8 eggs, resp 8 pears, 8 vs 8, eggs vs pears, units differ."
        "ref 8, resp unclear." """
    ref = _read(reference)
    if ref is None:
        raise ValueError(f"reference answer {reference!r} states no readable value")
    got = _read(response)
    if got is None:
        return f"ref {_shown(ref)}, resp unclear."
    steps = [f"ref {_shown(ref)}", f"resp {_shown(got)}", f"{canonical(ref[1])} vs {canonical(got[1])}"]
    if ref[2] and got[2]:
        steps.append(f"{ref[2]} vs {got[2]}")
    if got[1] != ref[1]:
        steps.append("different")
    elif ref[2] and got[2] and ref[2] != got[2]:
        steps.append("units differ")
    else:
        steps.append("same")
    return ", ".join(steps) + "."


def _shown(reading: tuple[str, Fraction, str | None]) -> str:
    expr, value, unit = reading
    number = canonical(value)
    shown = number if expr == number else f"{expr}={number}"
    return f"{shown} {unit}" if unit else shown


# ------------------------------------------------------------------ questions and references


def freeform_problem(problem: Problem, rng: random.Random, unit_share: float = 0.5) -> FreeformProblem:
    unit = rng.choice(UNITS) if rng.random() < unit_share else None
    question = f"{problem.prompt} how many {unit}?" if unit else problem.prompt
    value = Fraction(int(problem.answer))
    # With a unit in the question the reference names it, so "8 pears" is wrong whichever form it takes.
    reference = render(value, rng.choice(("digits", "words")), unit, rng)
    return FreeformProblem(problem, unit, question, reference)


def sample_freeform(n: int, split: str, levels: range, heldout_fraction: float, seed: int,
                    unit_share: float = 0.5, distinct: bool = False) -> list[FreeformProblem]:
    """`n` free-form questions of `split` ("train" or "heldout"), deterministic in `seed`; `distinct`:
    no chain twice (fewer come back when the levels run out, as in sample_problems)."""
    rng = random.Random(f"freeform/{seed}/{split}")
    problems = sample_problems(n, split, levels, heldout_fraction, seed, distinct=distinct)
    return [freeform_problem(p, rng, unit_share) for p in problems]


# ------------------------------------------------------------------ responses


def render(value: Fraction, form: str, unit: str | None, rng: random.Random) -> str:
    """`value` written in `form` (a base from BASES, then "+sentence" puts it in a sentence), followed by
    `unit` when one is given; a base that cannot write the value ("words" for 17/2) falls back to a
    decimal or a fraction."""
    return _dress(_number(value, form.split("+")[0], rng), value, unit, form, rng)


def _dress(text: str, value: Fraction, unit: str | None, form: str, rng: random.Random) -> str:
    """A written number with its unit (singular for one) and, for a "+sentence" form, the sentence around it."""
    if unit:
        text = f"{text} {_singular(unit) if value == 1 else unit}"
    if "+sentence" in form:
        text = rng.choice(SENTENCES).format(text)
    return text


def response(fp: FreeformProblem, correct: bool, rng: random.Random) -> tuple[str, str]:
    """(response text, form name) stating `fp`'s value (correct) or a close but wrong one; the checker
    has the last word, so a wrong draw that happens to equal the reference is drawn again."""
    for _ in range(100):
        form = rng.choice(FORMS) if fp.unit else rng.choice([f for f in FORMS if "+unit" not in f])
        unit = fp.unit if "+unit" in form else None
        if correct:
            text, name = render(fp.value, form, unit, rng), form
        else:
            kind = rng.choice([k for k in WRONG_KINDS if fp.unit or k != "wrong_unit"])
            text, written = _wrong(fp, kind, form, rng)
            name = f"{kind}:{_form_name(written)}"
        if text is not None and truth(fp.reference, text) == correct:
            return text, name
    raise RuntimeError(f"no {'correct' if correct else 'wrong'} response found for {fp.question!r}")


def _wrong(fp: FreeformProblem, kind: str, form: str, rng: random.Random) -> tuple[str | None, str]:
    """(a close but wrong answer of `kind` in `form`, or None when `fp` has none; the form written)."""
    v, unit = fp.value, (fp.unit if "+unit" in form else None)
    base, flags = form.split("+")[0], form[len(form.split("+")[0]):]
    if kind == "off_by_one":
        return render(v + rng.choice((-1, 1)), form, unit, rng), form
    if kind == "intermediate":  # a running total the chain passes through, or its first operand
        seen = [Fraction(fp.problem.operands[0])] + [Fraction(c) for *_, c in fp.problem.steps()]
        others = [s for s in seen if s != v]
        return (render(rng.choice(others), form, unit, rng) if others else None), form
    if kind == "near_decimal":
        near = v + rng.choice((Fraction(-1, 2), Fraction(1, 2), Fraction(1, 10), Fraction(-1, 10)))
        return render(near, "decimal" + flags, unit, rng), "decimal" + flags
    if kind == "wrong_op":  # the right operands, another operator: "5-3" or "five times three" for 8
        base = rng.choice(("expression", "word_expression"))
        a, op, b = _expression_parts(int(v), rng)
        op = rng.choice([o for o in "+-*" if o != op])
        text = _write_expression(a, op, b, _WORD_OF_OP if base == "word_expression" else {})
        return _dress(text, v, unit, flags, rng), base + flags
    if kind == "digit_swap":  # two neighbouring digits swapped: "61/2" for "16/2"
        base = rng.choice(("fraction", "decimal", "expression"))
        text = render(v, base + flags, unit, rng)
        pairs = [i for i in range(len(text) - 1) if text[i].isdigit() and text[i + 1].isdigit() and text[i] != text[i + 1]]
        if not pairs:
            return None, base + flags
        i = rng.choice(pairs)
        return text[:i] + text[i + 1] + text[i] + text[i + 2:], base + flags
    if kind == "wrong_unit":  # the right number of the wrong thing
        other = rng.choice([u for u in UNITS if u != fp.unit])
        return render(v, base + flags.replace("+unit", "") + "+unit", other, rng), form.replace("+unit", "") + "+unit"
    raise ValueError(f"unknown wrong kind {kind!r} ({', '.join(WRONG_KINDS)})")


def _number(value: Fraction, base: str, rng: random.Random) -> str:
    integer = value.denominator == 1
    if base == "words" and integer and -20 <= value <= 20:
        return _words(int(value))
    if base == "expression" and integer:
        return _write_expression(*_expression_parts(int(value), rng), {})
    if base == "word_expression" and integer and -20 <= value <= 20:
        return _write_expression(*_expression_parts(int(value), rng), _WORD_OF_OP)
    if base == "fraction":
        k = rng.randint(2, 4)
        return f"{value.numerator * k}/{value.denominator * k}"
    if base == "decimal" or not integer:
        return _decimal(value, rng) or f"{value.numerator}/{value.denominator}"
    return str(value.numerator)


def _words(n: int) -> str:
    return f"minus {NUMBER_WORDS[-n]}" if n < 0 else NUMBER_WORDS[n]


def _expression_parts(n: int, rng: random.Random) -> tuple[int, str, int]:
    """(a, op, b) with a op b == n and small operands: a+b, a-b or a*b."""
    options = [(a, "+", n - a) for a in range(0, n + 1)] if n >= 0 else []
    options += [(n + b, "-", b) for b in range(1, 6) if n + b >= 0]
    options += [(a, "*", n // a) for a in range(2, 10) if n > 0 and n % a == 0 and n // a > 1]
    return rng.choice(options)


def _write_expression(a: int, op: str, b: int, words: dict) -> str:
    """"5+3", or "five plus three" when `words` maps the operators to words."""
    return f"{_words(a)} {words[op]} {_words(b)}" if words else f"{a}{op}{b}"


def _decimal(value: Fraction, rng: random.Random | None = None) -> str | None:
    """A terminating decimal for `value` ("8.0", "8.50", "-0.5", a zero added at random with `rng`; without
    it the shortest one: "8.5"), or None when it has none."""
    sign, value = ("-", -value) if value < 0 else ("", value)
    for places in range(1, 4):
        scaled = value * 10**places
        if scaled.denominator == 1:
            whole, frac = divmod(scaled.numerator, 10**places)
            extra = "0" * rng.randint(0, 1) if rng else ""
            return f"{sign}{whole}.{frac:0{places}d}{extra}"
    return None


def _form_name(form: str) -> str:
    """The form's flags in FORMS order: "decimal+sentence+unit" -> "decimal+unit+sentence"."""
    return form.split("+")[0] + "+unit" * ("+unit" in form) + "+sentence" * ("+sentence" in form)


def _plural(unit: str) -> str:
    return unit if unit.endswith("s") else unit + "s"


def _singular(unit: str) -> str:
    return unit[:-1] if unit.endswith("s") and len(unit) > 2 else unit


def _evaluate(text: str) -> Fraction | None:
    """An arithmetic expression (+ - * / parentheses, unary minus, decimals) evaluated exactly; None if malformed."""
    tokens = _TOKEN.findall(text)
    if not tokens or "".join(tokens) != text.replace(" ", ""):  # a stray character ("8..0") is no expression
        return None
    return _parse(tokens)


_APPLY = {"+": operator.add, "-": operator.sub, "*": operator.mul, "/": operator.truediv}


def _parse(tokens: list[str]) -> Fraction | None:
    """Recursive descent over sum := product (('+'|'-') product)*, product := unary (('*'|'/') unary)*."""
    pos = 0

    def peek():
        return tokens[pos] if pos < len(tokens) else None

    def unary():
        nonlocal pos
        if peek() == "-":
            pos += 1
            inner = unary()
            return None if inner is None else -inner
        if peek() == "(":
            pos += 1
            inner = total()
            if inner is None or peek() != ")":
                return None
            pos += 1
            return inner
        token = peek()
        if token is None or not token[0].isdigit():
            return None
        pos += 1
        return Fraction(token)

    def chain(operand, ops: tuple[str, ...]):
        """operand (op operand)*, left to right; None when an operand is malformed or a divisor is 0."""
        nonlocal pos
        left = operand()
        while left is not None and peek() in ops:
            op = tokens[pos]
            pos += 1
            right = operand()
            if right is None or (op == "/" and right == 0):
                return None
            left = _APPLY[op](left, right)
        return left

    def product():
        return chain(unary, ("*", "/"))

    def total():
        return chain(product, ("+", "-"))

    value = total()
    return value if value is not None and pos == len(tokens) else None
