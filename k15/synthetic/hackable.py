"""A prompt set with planted hack-prone prompts, so that the curation filters have real work.

Beside clean arithmetic prompts it plants, `n_each` of every kind (ids `plant/<kind>/<i>`):
    yes_no          "is 7-2+4 equal to 9? answer yes or no."  -- a binary guess: the no-CoT filter's
                    job (a model answering yes or no at random is right within 8 tries with p = 1 - 2^-8)
    mc_text         "7-2+4=? (a) 8 (b) 9 (c) 6 (d) 7"          -- multiple choice, told by the text
    mc_field        options in plain words, marked only by a `type` field
    tf_text         "true or false: 7-2+4=9"                   -- true/false, told by the text
    tf_field        "7-2+4=9 holds." with answer true/false and a `type` field
    proof_text      "show that 7-2+4=9."                       -- proof-style, told by the text
    proof_field     "explain why 7-2+4=9." marked only by a `type` field
    dup             a clean prompt again, under another id, spaced differently
Some clean prompts carry domain "auto", for the domain tagger. All text stays within the synthetic
tokenizer's characters (lowercase, digits, `+-*/=,;:.()?! `).
"""

from __future__ import annotations

import random

from k15.data.prompts import PromptRecord
from k15.errors import ConfigError
from k15.synthetic.arithmetic import Problem, sample_problems

KINDS = ("yes_no", "mc_text", "mc_field", "tf_text", "tf_field", "proof_text", "proof_field", "dup")
LETTERS = "abcd"


def _wrong_digit(answer: str, rng: random.Random) -> str:
    return str(rng.choice([d for d in range(10) if str(d) != answer]))


def _options(p: Problem, rng: random.Random) -> tuple[list[str], str]:
    options = [p.answer] + rng.sample([str(d) for d in range(10) if str(d) != p.answer], 3)
    rng.shuffle(options)
    return options, LETTERS[options.index(p.answer)]


def _planted(kind: str, p: Problem, rng: random.Random) -> tuple[str, str, dict]:
    """(prompt, answer, extra fields) for one planted prompt built on arithmetic problem `p`."""
    expr = p.prompt[:-1]  # "7-2+4"
    truth = rng.random() < 0.5
    shown = p.answer if truth else _wrong_digit(p.answer, rng)
    if kind == "yes_no":
        return f"is {expr} equal to {shown}? answer yes or no.", "yes" if truth else "no", {}
    if kind == "mc_text":
        options, letter = _options(p, rng)
        return f"{p.prompt}? " + " ".join(f"({l}) {o}" for l, o in zip(LETTERS, options)), letter, {}
    if kind == "mc_field":
        options, _ = _options(p, rng)
        return f"{expr} is one of {', '.join(options)}. which one?", p.answer, {"type": "multiple_choice"}
    if kind == "tf_text":
        return f"true or false: {expr}={shown}", "true" if truth else "false", {}
    if kind == "tf_field":
        return f"{expr}={shown} holds.", "true" if truth else "false", {"type": "true_false"}
    if kind == "proof_text":
        return f"show that {expr}={p.answer}.", "proof", {}
    if kind == "proof_field":
        return f"explain why {expr}={p.answer}.", "proof", {"type": "proof"}
    raise ValueError(f"unknown planted kind {kind!r}")


def planted_prompt_set(
    n_clean: int = 40, n_each: int = 4, seed: int = 0, levels: range = range(1, 7), heldout_fraction: float = 0.1
) -> list[PromptRecord]:
    """Clean arithmetic prompts with `n_each` planted prompts of every kind in KINDS, shuffled."""
    rng = random.Random(f"hackable/{seed}")
    need = n_clean + n_each * (len(KINDS) - 1)
    problems = sample_problems(need, "train", levels, heldout_fraction, seed + 11, distinct=True)
    if len(problems) < need:
        raise ConfigError(f"only {len(problems)} distinct problems in levels {levels}; ask for fewer prompts")
    clean = [
        PromptRecord(p.id, p.prompt, p.answer, p.level, "auto" if i % 5 == 4 else "arithmetic")
        for i, p in enumerate(problems[:n_clean])
    ]
    records = list(clean)
    rest = iter(problems[n_clean:])
    for kind in KINDS[:-1]:
        for i in range(n_each):
            p = next(rest)
            prompt, answer, extra = _planted(kind, p, rng)
            records.append(PromptRecord(f"plant/{kind}/{i}", prompt, answer, p.level, "general", extra=extra))
    rng.shuffle(records)
    for i in range(n_each):  # after the shuffle, so the first copy (the one dedup keeps) is the original
        src = clean[rng.randrange(len(clean))]
        spaced = " " + " ".join(src.prompt) + " "  # "7-2+4=" -> " 7 - 2 + 4 = "
        dup = PromptRecord(f"plant/dup/{i}", spaced, src.answer, src.difficulty, src.domain)
        records.insert(rng.randint(records.index(src) + 1, len(records)), dup)
    return records
