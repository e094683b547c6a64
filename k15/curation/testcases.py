"""Test-case generation for code problems (the paper's pipeline, k15-paper.md §7).

Per problem: a generator program makes `candidates` test inputs (one run per seed); `references`
submissions run on each input; a test is valid when at least `agree` of them print the same output
(that output becomes the expected one). A problem needs at least `min_valid_fraction` of its
candidates valid (the paper: 40 of 50), and is kept when at least `pass_refs` submissions pass every
valid test. Problems that need a special judge never enter. Everything runs in the sandbox pool.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field

from k15.data.prompts import PromptRecord
from k15.errors import ConfigError, DataError
from k15.rewards.code import normalize_output
from k15.rewards.sandbox import ExecResult, Sandbox
from k15.synthetic.code_problems import CodeProblem

STAGES = ("problems", "no special judge", "enough valid tests", "references pass")


@dataclass
class TestcaseConfig:
    __test__ = False  # not a pytest test class, despite the name
    candidates: int = 20  # generated test inputs per problem (paper: 50)
    references: int = 10  # submissions run on every test (paper: 10)
    agree: int = 7  # a test is valid when >= agree references print the same output (paper: 7 of 10)
    min_valid_fraction: float = 0.8  # of the candidates (paper: >= 40 valid of 50)
    pass_refs: int = 9  # a problem is kept when >= pass_refs references pass all valid tests (paper: 9 of 10)
    seed: int = 0

    def __post_init__(self) -> None:
        if not 1 <= self.agree <= self.references or not 1 <= self.pass_refs <= self.references:
            raise ConfigError(f"need 1 <= agree, pass_refs <= references ({self.references}); "
                              f"got agree={self.agree}, pass_refs={self.pass_refs}")
        if self.candidates < 1 or not 0.0 <= self.min_valid_fraction <= 1.0:
            raise ConfigError("candidates must be >= 1 and min_valid_fraction in [0, 1]")


@dataclass
class ProblemOutcome:
    problem: CodeProblem
    tests: list[dict] = field(default_factory=list)  # the valid ones: {"input", "output"}
    candidates: int = 0
    passing: list[int] = field(default_factory=list)  # indices (into `references`) passing every valid test
    references: list[int] = field(default_factory=list)  # indices into problem.submissions
    stage: str = STAGES[0]  # the last stage it reached


def agreed_output(results: list[ExecResult], agree: int) -> str | None:
    """The output at least `agree` runs produced (runs that failed agree with nothing), else None."""
    outputs = Counter(normalize_output(r.stdout) for r in results if r.status == "ok")
    if not outputs:
        return None
    output, count = outputs.most_common(1)[0]
    return output + "\n" if count >= agree else None


def judge_problem(
    outcome: ProblemOutcome, inputs: list[str | None], runs: list[list[ExecResult]], cfg: TestcaseConfig
) -> None:
    """Fill the valid tests and passing references from `runs[test][reference]`; set the stage reached."""
    outcome.candidates = len(inputs)
    expected = [agreed_output(r, cfg.agree) if i is not None else None for i, r in zip(inputs, runs)]
    valid = [k for k, out in enumerate(expected) if out is not None]
    outcome.tests = [{"input": inputs[k], "output": expected[k]} for k in valid]
    if len(valid) < cfg.min_valid_fraction * len(inputs) or not valid:
        return
    outcome.stage = STAGES[2]
    outcome.passing = [
        j for j in range(len(outcome.references))
        if all(runs[k][j].status == "ok" and normalize_output(runs[k][j].stdout) + "\n" == expected[k] for k in valid)
    ]
    if len(outcome.passing) >= cfg.pass_refs:
        outcome.stage = STAGES[3]


def pick_references(problem: CodeProblem, cfg: TestcaseConfig) -> list[int]:
    if len(problem.submissions) < cfg.references:
        raise DataError(f"code problem {problem.name}: {len(problem.submissions)} submissions, "
                        f"fewer than the {cfg.references} references to run")
    rng = random.Random(f"{cfg.seed}/{problem.name}")
    return sorted(rng.sample(range(len(problem.submissions)), cfg.references))


def generate_tests(
    problems: list[CodeProblem], sandbox: Sandbox, cfg: TestcaseConfig, advance: Callable[[int], None] = lambda n: None
) -> list[ProblemOutcome]:
    """Run the pipeline; `advance(n)` is called as executions finish (for a progress bar)."""
    outcomes = [ProblemOutcome(p) for p in problems]
    todo = []
    for o in outcomes:
        if not o.problem.special_judge:
            o.stage = STAGES[1]
            o.references = pick_references(o.problem, cfg)
            todo.append(o)
    # Two phases, each submitted at once, so the pool never waits on one problem.
    seeds = [str(cfg.seed * 100_003 + s) for s in range(cfg.candidates)]
    generated = [[sandbox.submit(o.problem.generator, seed) for seed in seeds] for o in todo]
    inputs = [[_finished(f, advance) for f in futures] for futures in generated]
    inputs = [[r.stdout if r.status == "ok" and r.stdout.strip() else None for r in rows] for rows in inputs]
    runs = [
        [[sandbox.submit(o.problem.submissions[j], i) for j in o.references] if i is not None else [] for i in rows]
        for o, rows in zip(todo, inputs)
    ]
    for o, problem_inputs, problem_runs in zip(todo, inputs, runs):
        results = [[_finished(f, advance) for f in row] for row in problem_runs]
        judge_problem(o, problem_inputs, results, cfg)
    return outcomes


def _finished(future: Future, advance: Callable[[int], None]) -> ExecResult:
    result = future.result()
    advance(1)
    return result


def stage_counts(outcomes: list[ProblemOutcome]) -> list[tuple[str, int]]:
    return [(stage, sum(STAGES.index(o.stage) >= i for o in outcomes)) for i, stage in enumerate(STAGES)]


def to_records(outcomes: list[ProblemOutcome]) -> list[PromptRecord]:
    """The kept problems as a code prompt set; `answer` holds one reference that passed every test."""
    return [
        PromptRecord(
            id=f"code/{o.problem.name}", prompt=o.problem.prompt, difficulty=o.problem.difficulty, domain="code",
            answer=o.problem.submissions[o.references[o.passing[0]]], tests=tuple(o.tests),
        )
        for o in outcomes
        if o.stage == STAGES[-1]
    ]
