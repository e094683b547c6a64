"""The model-free filters: duplicates, hack-prone types, domain tags."""

import pytest

from k15.curation.dedup import dedup
from k15.curation.domains import tag_domain, tagged
from k15.curation.hack_types import MULTIPLE_CHOICE, PROOF, TRUE_FALSE, hack_type
from k15.data.prompts import PromptRecord
from k15.synthetic.hackable import KINDS, planted_prompt_set


def rec(prompt, answer="1", extra=None, domain="general", tests=()):
    return PromptRecord("x", prompt, answer, 1, domain, tests=tests, extra=extra or {})


@pytest.mark.parametrize(
    "prompt, answer, extra, kind",
    [
        ("3+4=? (a) 6 (b) 7 (c) 8 (d) 9", "b", None, MULTIPLE_CHOICE),
        ("Which of the following is prime?\nA) 4\nB) 5", "B", None, MULTIPLE_CHOICE),
        ("Pick the sum.\na. 6\nb. 7", "b", None, MULTIPLE_CHOICE),
        ("3+4 is one of 6, 7, 8. which one?", "7", {"type": "multiple_choice"}, MULTIPLE_CHOICE),
        ("3+4", "7", {"question_type": "MCQ"}, MULTIPLE_CHOICE),
        ("True or false: 3+4=7", "true", None, TRUE_FALSE),
        ("3+4=7 holds.", "false", None, TRUE_FALSE),  # told by the answer
        ("3+4=7 holds.", "yes", {"type": "true/false"}, TRUE_FALSE),
        ("Prove that there are infinitely many primes.", "proof", None, PROOF),
        ("show that 3+4=7.", "proof", None, PROOF),
        ("explain why 3+4=7.", "proof", {"problem_type": "proof"}, PROOF),
        ("7-2+4=", "9", None, None),
        ("is 7-2+4 equal to 9? answer yes or no.", "yes", None, None),  # left to the no-CoT filter
        ("How can we improve the approximation of sqrt(2)?", "1.414", None, None),  # "improve" is not "prove"
        ("Let a be 3 and b be 4. Compute a+b.", "7", None, None),
    ],
)
def test_hack_types(prompt, answer, extra, kind):
    assert hack_type(rec(prompt, answer, extra)) == kind


def test_duplicates_up_to_case_and_whitespace():
    records = [rec("7-2+4="), rec(" 7 - 2 + 4 = "), rec("7-2+5="), rec("A  B"), rec("a b")]
    kept, removed = dedup(records)
    assert [r.prompt for r in kept] == ["7-2+4=", "7-2+5=", "A  B"]
    assert [r.prompt for r in removed] == [" 7 - 2 + 4 = ", "a b"]
    with_image = PromptRecord("y", "7-2+4=", "9", 1, "general", images=("a.png",))
    assert len(dedup([rec("7-2+4="), with_image])[0]) == 2  # same text, different image: not a duplicate


@pytest.mark.parametrize(
    "record, domain",
    [
        (rec("7-2+4="), "arithmetic"),
        (rec("Compute $\\frac{1}{2} + x^2$."), "math"),
        (rec("Solve the equation x + 1 = 3."), "math"),
        (rec("Reverse the words.", tests=({"input": "a b", "output": "b a"},)), "code"),
        (rec("Who wrote the letter?"), "general"),
    ],
)
def test_domain_tags(record, domain):
    assert tag_domain(record) == domain


def test_only_untagged_records_are_tagged():
    assert tagged(rec("7-2+4=", domain="auto")).domain == "arithmetic"
    assert tagged(rec("7-2+4=", domain="math")).domain == "math"


def test_planted_set_holds_what_it_says():
    records = planted_prompt_set(n_clean=40, n_each=4, seed=3)
    assert len(records) == 40 + 4 * len(KINDS) and len({r.id for r in records}) == len(records)
    by_kind = {k: [r for r in records if r.id.startswith(f"plant/{k}/")] for k in KINDS}
    types = {k: {hack_type(r) for r in rs} for k, rs in by_kind.items()}
    assert types == {"yes_no": {None}, "mc_text": {MULTIPLE_CHOICE}, "mc_field": {MULTIPLE_CHOICE},
                     "tf_text": {TRUE_FALSE}, "tf_field": {TRUE_FALSE}, "proof_text": {PROOF},
                     "proof_field": {PROOF}, "dup": {None}}
    assert all(hack_type(r) is None for r in records if r.id.startswith("arith/"))
    assert all(r.extra.get("type") for r in by_kind["mc_field"] + by_kind["proof_field"])
    untyped = [PromptRecord("x", r.prompt, r.answer, 1, "general") for r in by_kind["mc_field"]]
    assert MULTIPLE_CHOICE not in {hack_type(r) for r in untyped}  # told only by the field
    kept, removed = dedup(records)
    assert sorted(r.id for r in removed) == sorted(r.id for r in by_kind["dup"])  # the originals stay
    assert planted_prompt_set(n_clean=40, n_each=4, seed=3) == records
