"""The math verifier: equivalent forms are correct, hedges and misplaced answers are refused with a reason."""

import pytest

from k15.errors import DataError
from k15.rewards.math import MathConfig, verify_math


@pytest.mark.parametrize(
    "answer, gold",
    [
        ("0.5", "\\frac{1}{2}"),  # decimal vs fraction
        ("1/2", "0.5"),
        ("\\boxed{\\frac12}", "0.5"),  # boxed, short LaTeX
        ("\\dfrac{3}{4}", "0.75"),
        ("$(a+2)(a-2)$", "a^2-4"),  # factored vs expanded expression
        ("\\sqrt{8}", "2\\sqrt{2}"),
        ("\\pi/2", "\\frac{\\pi}{2}"),
        ("\\{2, 1\\}", "\\{1,2\\}"),  # sets: order does not matter
        ("[0, 1)", "[0,1)"),  # intervals
        ("x=5", "5"),
        ("75\\%", "0.75"),
    ],
)
def test_equivalent_forms_are_correct(answer, gold):
    verdict = verify_math(f"<think>work</think><answer>{answer}</answer>", gold)
    assert (verdict.reward, verdict.reason) == (1.0, "ok")


@pytest.mark.parametrize(
    "answer, gold",
    [("(0,1]", "[0,1)"), ("(2,1)", "(1,2)"), ("0.333", "\\frac{1}{3}"), ("a^2+4", "(a+2)(a-2)"), ("6", "5")],
)
def test_different_values_are_wrong(answer, gold):
    verdict = verify_math(f"<answer>{answer}</answer>", gold)
    assert (verdict.reward, verdict.reason) == (0.0, "wrong")


@pytest.mark.parametrize(
    "response, reason",
    [
        ("<answer>5</answer><answer>3</answer>", "multiple"),  # several answer blocks
        ("<answer>\\boxed{3} \\boxed{5}</answer>", "multiple"),  # several boxed answers
        ("<answer>$3$ or $5$</answer>", "multiple"),
        ("<answer>3 or 5</answer>", "wrong"),  # a hedge is one expression, {3, 5}: not 5
        ("<answer>3, but it is 5</answer>", "wrong"),
        ("<think>so it is <answer>5</answer></think>", "in_reasoning"),  # the answer only in the reasoning
        ("<think>so it is \\boxed{5}</think>", "in_reasoning"),
        ("<think>it is <answer>5</answer>", "in_reasoning"),  # the think block never closed
        ("<answer>  </answer>", "empty"),
        ("<answer>\\boxed{}</answer>", "empty"),
        ("<think>5</think>", "missing"),
        ("<answer>5</answer> probably", "trailing"),
        (f"<answer>{'1+' * 600}1</answer>", "too_long"),
    ],
)
def test_hacks_are_refused_with_their_reason(response, reason):
    verdict = verify_math(response, "5")
    assert (verdict.reward, verdict.reason) == (0.0, reason)


def test_hedging_would_pass_a_lax_parser():
    """The reason for parsing the answer as one expression: math-verify on free text takes the last number."""
    from math_verify import parse, verify

    assert verify(parse("$5$"), parse("3 or 5"))
    assert verify_math("<answer>3 or 5</answer>", "5").reward == 0.0


def test_empty_gold_is_a_data_error():
    with pytest.raises(DataError, match="gold answer"):
        verify_math("<answer>5</answer>", "\\boxed{}")


def test_text_answers_compare_as_text():
    assert verify_math("<answer>\\text{monday}</answer>", "\\text{monday}").reward == 1.0
    assert verify_math("<answer>\\text{tuesday}</answer>", "\\text{monday}").reward == 0.0


def test_long_answers_limit_is_configurable():
    assert verify_math(f"<answer>{'1+' * 20}1</answer>", "21", MathConfig(max_answer_chars=10)).reason == "too_long"
    assert verify_math(f"<answer>{'1+' * 20}1</answer>", "21").reason == "ok"
