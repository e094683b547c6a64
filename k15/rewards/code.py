"""Scoring a program by its test cases: extract it from a response, run every test in the sandbox, judge.

The program is the content of the response's final `<answer>` block (the same format rules as the
rule verifier: exactly one block, at the end), or the one fenced ```python block inside it. A test
is {"input": stdin, "output": expected stdout}; outputs match when they are equal line by line up to
trailing whitespace (what online judges accept). The reward is 1 when every test passes (or the
share of tests passed, with `partial_credit`).
"""

from __future__ import annotations

import re
import textwrap
import time
from dataclasses import dataclass

from k15.errors import DataError
from k15.rewards.rule import EMPTY, MULTIPLE, OK, extract_answer
from k15.rewards.sandbox import ExecResult, Sandbox

FENCE_RE = re.compile(r"```[ \t]*(?:python3?|py)?[ \t]*\n(.*?)```", re.DOTALL)
WRONG_ANSWER = "wrong_answer"


@dataclass
class CodeConfig:
    partial_credit: bool = False  # reward = share of tests passed, instead of all-or-nothing


@dataclass
class CodeResult:
    passed: int
    total: int
    status: str  # ok, or why the first failing test failed: wrong_answer | runtime_error | timeout | ...
    seconds: float  # wall time to run all the tests


def extract_program(response: str) -> tuple[str | None, str]:
    """The program and a reason code (ok | missing | multiple | empty | trailing)."""
    answer, reason = extract_answer(response)
    if answer is None:
        return None, reason
    fences = FENCE_RE.findall(answer)
    if len(fences) > 1:
        return None, MULTIPLE
    program = textwrap.dedent(fences[0] if fences else answer).strip("\n")
    return (program, OK) if program.strip() else (None, EMPTY)


def normalize_output(text: str) -> str:
    lines = [line.rstrip() for line in text.replace("\r\n", "\n").split("\n")]
    while lines and not lines[-1]:
        lines.pop()
    return "\n".join(lines)


def check_tests(tests: object, where: str) -> list[dict]:
    if not isinstance(tests, (list, tuple)) or not tests:
        raise DataError(f"{where}: 'tests' must be a non-empty list of {{\"input\", \"output\"}} objects")
    for i, t in enumerate(tests):
        if not (isinstance(t, dict) and isinstance(t.get("input"), str) and isinstance(t.get("output"), str)):
            raise DataError(f"{where}: test {i} must be an object with string fields 'input' and 'output'")
    return list(tests)


def judge(results: list[ExecResult], tests: list[dict], seconds: float) -> CodeResult:
    passed, status = 0, OK
    for result, test in zip(results, tests):
        ok = result.status == "ok" and normalize_output(result.stdout) == normalize_output(test["output"])
        passed += ok
        if not ok and status == OK:
            status = result.status if result.status != "ok" else WRONG_ANSWER
    return CodeResult(passed, len(tests), status, round(seconds, 4))


def run_tests(sandbox: Sandbox, program: str, tests: list[dict]) -> CodeResult:
    """Every test of one program, in parallel in the sandbox pool."""
    start = time.perf_counter()
    results = sandbox.run_many([(program, t["input"]) for t in tests])
    return judge(results, tests, time.perf_counter() - start)


def reward_of(result: CodeResult, cfg: CodeConfig) -> float:
    if cfg.partial_credit:
        return result.passed / result.total
    return float(result.passed == result.total)
