"""Extracting a program from a response and judging it on test cases."""

import pytest

from k15.errors import DataError
from k15.rewards.code import (
    CodeConfig, CodeResult, check_tests, extract_program, normalize_output, reward_of, run_tests,
)
from tests.rewards_helpers import sandbox  # noqa: F401

SUM = "print(sum(map(int, input().split())))"
TESTS = [{"input": "1 2\n", "output": "3\n"}, {"input": "5 5\n", "output": "10"}, {"input": "-1 1\n", "output": "0\n"}]


@pytest.mark.parametrize(
    "response, program, reason",
    [
        (f"<answer>{SUM}</answer>", SUM, "ok"),
        (f"<think>add them</think><answer>\n```python\n{SUM}\n```\n</answer>", SUM, "ok"),
        (f"<answer>```\n    {SUM}\n```</answer>", SUM, "ok"),  # indented block: dedented
        (f"<answer>```python\n{SUM}\n```\n```python\nprint(0)\n```</answer>", None, "multiple"),
        (f"<answer>{SUM}</answer><answer>print(0)</answer>", None, "multiple"),
        ("<answer>```python\n```</answer>", None, "empty"),
        (f"```python\n{SUM}\n```", None, "missing"),  # a program outside the answer block does not count
        (f"<answer>{SUM}</answer> done", None, "trailing"),
    ],
)
def test_extract_program(response, program, reason):
    assert extract_program(response) == (program, reason)


def test_outputs_compare_up_to_trailing_whitespace():
    assert normalize_output("1 2 \n3\n\n") == normalize_output("1 2\n3") == "1 2\n3"
    assert normalize_output("1  2") != normalize_output("1 2")
    assert normalize_output("\n3") != normalize_output("3")


def test_judging_a_program(sandbox):
    assert run_tests(sandbox, SUM, TESTS).passed == 3
    off_by_one = "a, b = map(int, input().split())\nprint(a + b + (a < 0))"
    result = run_tests(sandbox, off_by_one, TESTS)
    assert (result.passed, result.total, result.status) == (2, 3, "wrong_answer")
    crash = "a, b = map(int, input().split())\nprint(a // (b - 5) + 5 * 0 + a + b if b != 5 else 1 / 0)"
    assert run_tests(sandbox, crash, TESTS).status in ("runtime_error", "wrong_answer")


def test_reward_is_all_or_nothing_unless_partial_credit():
    half = CodeResult(passed=1, total=2, status="wrong_answer", seconds=0.1)
    assert reward_of(half, CodeConfig()) == 0.0
    assert reward_of(half, CodeConfig(partial_credit=True)) == 0.5
    assert reward_of(CodeResult(2, 2, "ok", 0.1), CodeConfig()) == 1.0


@pytest.mark.parametrize("tests", [[], [{"input": "1"}], [{"input": 1, "output": "1"}], "1 2"])
def test_malformed_tests_are_data_errors(tests):
    with pytest.raises(DataError, match="test"):
        check_tests(tests, "p1")
