"""The free-form domain: the checker reads every surface form exactly, and the generator writes only what it reads."""

import random
from collections import Counter
from fractions import Fraction

import pytest

from k15.synthetic.arithmetic import is_heldout
from k15.synthetic.freeform import (FORMS, WRONG_KINDS, rationale, read_answer, response, sample_freeform,
                                    truth)
from k15.tokenizer import build_synthetic_tokenizer, unencodable_characters

CORRECT_FOR_8 = [
    "8", "eight", "5+3", "2*4", "10-2", "16/2", "8.0", "8.00", "five plus three", "ten minus two", "two times four",
    "so the answer is eight.", "the answer is 8", "it is 16/2.", "that makes 5+3 in all.", "we get 8.0.", "answer: eight",
    "(2+2)*2", " Eight ",
]
WRONG_FOR_8 = [
    "7", "nine", "5-3", "2+4", "16/3", "61/2", "7.9", "8.5", "0.8", "five times three", "so the answer is nine.",
    "", "eight or nine", "8/0", "8..0", "<answer>8</answer>", "8=8",
]


@pytest.mark.parametrize("text", CORRECT_FOR_8)
def test_every_surface_form_of_the_value_is_correct(text):
    assert truth("8", text) and truth("eight", text)


@pytest.mark.parametrize("text", WRONG_FOR_8)
def test_wrong_values_and_unreadable_answers_are_wrong(text):
    assert not truth("8", text)


def test_units_must_agree_when_both_give_one():
    assert truth("8 apples", "8") and truth("8 apples", "eight apples") and truth("8", "8 apples")
    assert truth("1 apple", "one apples") and truth("one apple", "2/2 apple")  # singular and plural are one unit
    assert truth("8 apples", "there are 8 apples left.") and truth("8 apples", "so the answer is five plus three apples.")
    assert not truth("8 apples", "8 pears") and not truth("eight apples", "we get 16/2 coins.")
    assert not truth("8 apples", "7 apples")


def test_exact_rational_arithmetic():
    assert read_answer("1/3+1/3+1/3") == (Fraction(1), None)
    assert read_answer("0.1+0.2") == (Fraction(3, 10), None)
    assert read_answer("minus one") == (Fraction(-1), None) and read_answer("-1.0") == (Fraction(-1), None)
    assert truth("0", "0.0") and not truth("0", "0.01")


def test_an_unreadable_reference_is_an_error():
    with pytest.raises(ValueError):
        truth("lots", "8")


def test_generated_responses_carry_the_intended_label_in_every_form_and_kind():
    rng = random.Random(0)
    problems = sample_freeform(1500, "train", range(1, 5), 0.1, seed=0)
    forms, kinds = Counter(), Counter()
    for fp in problems:
        for correct in (True, False):
            text, form = response(fp, correct, rng)
            assert truth(fp.reference, text) is correct, (fp, text, form)
            (forms if correct else kinds)[form if correct else form.split(":")[0]] += 1
    assert set(forms) == set(FORMS)
    assert set(kinds) == set(WRONG_KINDS)


def test_everything_written_is_encodable_by_the_synthetic_tokenizer():
    tok = build_synthetic_tokenizer()
    rng = random.Random(1)
    texts = []
    for fp in sample_freeform(600, "train", range(1, 7), 0.1, seed=1):
        texts += [fp.question, fp.reference]
        for correct in (True, False):
            text, _ = response(fp, correct, rng)
            texts += [text, rationale(fp.reference, text)]
    assert not unencodable_characters(tok, " ".join(texts))


def test_references_read_and_name_the_questions_unit():
    for fp in sample_freeform(300, "train", range(1, 5), 0.1, seed=2, unit_share=0.5):
        value, unit = read_answer(fp.reference)
        assert value == int(fp.problem.answer)
        assert (unit is None) == (fp.unit is None) and (fp.unit is None or fp.unit in fp.question)


def test_splits_follow_the_chains_hash_split_and_are_deterministic():
    held = sample_freeform(200, "heldout", range(1, 5), 0.1, seed=3)
    train = sample_freeform(200, "train", range(1, 5), 0.1, seed=3)
    assert all(is_heldout(fp.problem.prompt, 0.1) for fp in held)
    assert not any(is_heldout(fp.problem.prompt, 0.1) for fp in train)
    assert held == sample_freeform(200, "heldout", range(1, 5), 0.1, seed=3)


def test_rationale_reduces_both_answers_to_canonical_values_then_compares_them_side_by_side():
    assert rationale("eight apples", "5+3") == "ref 8 apples, resp 5+3=8, 8 vs 8, same."
    assert rationale("8", "so the answer is five plus three apples.") == "ref 8, resp 5+3=8 apples, 8 vs 8, same."
    assert rationale("8 apples", "eight pears") == "ref 8 apples, resp 8 pears, 8 vs 8, apples vs pears, units differ."
    assert rationale("8 apples", "7 apples") == "ref 8 apples, resp 7 apples, 8 vs 7, apples vs apples, different."
    assert rationale("8", "7.50") == "ref 8, resp 7.50=7.5, 8 vs 7.5, different."
    assert rationale("8", "23/4") == "ref 8, resp 23/4=5.75, 8 vs 5.75, different."
    assert rationale("8", "1/3") == "ref 8, resp 1/3, 8 vs 1/3, different."
    assert rationale("8", "banana") == "ref 8, resp unclear."
