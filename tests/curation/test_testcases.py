"""The test-case pipeline: its thresholds decide exactly as configured, on made-up runs and real ones."""

import re
import runpy
import sys

import pytest

from k15.curation.testcases import (
    STAGES, ProblemOutcome, TestcaseConfig, agreed_output, generate_tests, judge_problem, stage_counts, to_records,
)
from k15.data.prompts import read_prompt_set
from k15.errors import ConfigError
from k15.rewards.code import run_tests
from k15.rewards.sandbox import ExecResult
from k15.synthetic.code_problems import CODE_PROBLEMS, SUM_LIST
from tests.rewards_helpers import sandbox  # noqa: F401


def ok(out):
    return ExecResult("ok", out, "", 0, None, 0.01, 0.01)


CRASH = ExecResult("runtime_error", "", "Traceback", 1, None, 0.01, 0.01)


def test_agreement_threshold():
    assert agreed_output([ok("5\n")] * 7 + [ok("6\n")] * 3, 7) == "5\n"
    assert agreed_output([ok("5\n")] * 6 + [ok("6\n")] * 4, 7) is None
    assert agreed_output([ok("5\n")] * 6 + [ok("5 \n")], 7) == "5\n"  # trailing whitespace is no disagreement
    assert agreed_output([ok("5\n")] * 6 + [CRASH] * 4, 7) is None  # a crash agrees with nothing
    assert agreed_output([ok("")] * 10, 7) == "\n"
    assert agreed_output([ok("5\n")] * 6 + [ok("6\n")] * 4, 6) == "5\n"  # configurable


def outcome(inputs, runs, **cfg):
    o = ProblemOutcome(SUM_LIST, references=list(range(10)), stage=STAGES[1])
    judge_problem(o, inputs, runs, TestcaseConfig(**cfg))
    return o


def test_problem_needs_enough_valid_tests():
    agreeing, split = [ok("1\n")] * 10, [ok("1\n")] * 5 + [ok("2\n")] * 5
    o = outcome(["i"] * 10, [agreeing] * 8 + [split] * 2)
    assert len(o.tests) == 8 and o.stage == STAGES[3]  # 8 of 10 valid: enough at 0.8
    o = outcome(["i"] * 10, [agreeing] * 7 + [split] * 3)
    assert len(o.tests) == 7 and o.stage == STAGES[1]
    o = outcome(["i"] * 7 + [None] * 3, [agreeing] * 7 + [[]] * 3)  # generator runs that failed count as invalid
    assert o.stage == STAGES[1]
    assert outcome(["i"] * 10, [agreeing] * 7 + [split] * 3, min_valid_fraction=0.7).stage == STAGES[3]


def test_problem_needs_nine_of_ten_references_passing():
    one_wrong = [ok("1\n")] * 9 + [ok("2\n")]
    two_wrong = [ok("1\n")] * 8 + [CRASH] * 2
    o = outcome(["i"] * 10, [one_wrong] * 10)
    assert (o.stage, o.passing) == (STAGES[3], list(range(9)))
    o = outcome(["i"] * 10, [one_wrong] * 9 + [two_wrong])
    assert (o.stage, o.passing) == (STAGES[2], list(range(8)))
    assert outcome(["i"] * 10, [two_wrong] * 10, pass_refs=8).stage == STAGES[3]


@pytest.mark.parametrize("bad", [dict(agree=11), dict(pass_refs=0), dict(candidates=0), dict(min_valid_fraction=1.5)])
def test_bad_thresholds_are_config_errors(bad):
    with pytest.raises(ConfigError):
        TestcaseConfig(**bad)


def test_pipeline_on_the_synthetic_problems(sandbox):
    names = ["fib_mod", "max_subarray", "most_frequent", "any_arrangement", "count_distinct"]
    problems = [p for p in CODE_PROBLEMS if p.name in names]
    outcomes = {o.problem.name: o for o in generate_tests(problems, sandbox, TestcaseConfig(candidates=10))}
    assert outcomes["any_arrangement"].stage == "problems"  # needs a special judge: never run
    assert outcomes["most_frequent"].stage == "no special judge"  # ties: too few tests valid
    assert outcomes["max_subarray"].stage == "enough valid tests"  # two wrong references: 8/10 pass
    assert outcomes["count_distinct"].stage == "references pass" and len(outcomes["count_distinct"].passing) == 9
    fib = outcomes["fib_mod"]  # the 10th input (seed 9) is large: the recursive references fail it
    assert fib.stage == "references pass" and len(fib.tests) == 9 and len(fib.passing) == 10
    assert stage_counts(list(outcomes.values())) == [
        ("problems", 5), ("no special judge", 4), ("enough valid tests", 3), ("references pass", 2)]
    records = to_records(list(outcomes.values()))
    assert [r.id for r in records] == ["code/count_distinct", "code/fib_mod"]
    for r in records:  # every kept test is passed by the stored reference, and failed by a wrong one
        assert run_tests(sandbox, r.answer, list(r.tests)).passed == len(r.tests)
    wrong = next(p for p in problems if p.name == "count_distinct").submissions[9]
    assert run_tests(sandbox, wrong, list(records[0].tests)).passed < len(records[0].tests)


def test_build_code_prompts_tool(tmp_path, monkeypatch, capsys):
    out = tmp_path / "code.jsonl"
    argv = ["build_code_prompts.py", str(out), "--candidates", "5", "--cpu-seconds", "1", "--wall-seconds", "2",
            "--only", "sum_list,most_frequent,any_arrangement"]
    monkeypatch.setattr(sys, "argv", argv)
    with pytest.raises(SystemExit) as done:
        runpy.run_path("tools/build_code_prompts.py", run_name="__main__")
    assert done.value.code == 0
    printed = capsys.readouterr().out
    counts = [int(n) for n in re.findall(r"after stage '[^']+': (\d+) problems", printed)]
    assert counts == [3, 2, 1, 1]
    (record,) = read_prompt_set(out)
    assert (record.id, record.domain, len(record.tests)) == ("code/sum_list", "code", 5)
    assert all(t["output"] == f"{sum(map(int, t['input'].split()[1:]))}\n" for t in record.tests)


def test_build_code_prompts_names_unknown_problems(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["build_code_prompts.py", str(tmp_path / "x.jsonl"), "--only", "sum_lists"])
    with pytest.raises(SystemExit) as done:
        runpy.run_path("tools/build_code_prompts.py", run_name="__main__")
    assert done.value.code == 2 and "unknown code problem(s) sum_lists" in capsys.readouterr().err
