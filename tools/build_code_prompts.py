"""Build the curated code prompt set of the synthetic world:  python tools/build_code_prompts.py OUT.jsonl

Runs the test-case pipeline of k15-paper.md §7 (k15/curation/testcases.py) on the synthetic code
problems, in the sandbox, and writes the kept problems as a prompt set (domain "code", `tests`
filled, `answer` = one reference solution). Prints the number of problems left after each stage.

    [--candidates 20] [--references 10] [--agree 7] [--min-valid 0.8] [--pass-refs 9] [--seed 0]
    [--workers 0 (one per CPU)] [--cpu-seconds 2] [--wall-seconds 4] [--isolation auto] [--only NAME,NAME]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from k15.curation.testcases import STAGES, TestcaseConfig, generate_tests, stage_counts, to_records
from k15.data.prompts import write_prompt_set
from k15.errors import ConfigError, K15Error
from k15.rewards.sandbox import Sandbox, SandboxLimits
from k15.synthetic.code_problems import CODE_PROBLEMS


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out", type=Path)
    p.add_argument("--candidates", type=int, default=20, help="generated test inputs per problem (paper: 50)")
    p.add_argument("--references", type=int, default=10, help="reference solutions run on each test")
    p.add_argument("--agree", type=int, default=7, help="a test is valid when this many references agree")
    p.add_argument("--min-valid", type=float, default=0.8, help="share of candidates that must be valid")
    p.add_argument("--pass-refs", type=int, default=9, help="references that must pass every valid test")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=0)
    p.add_argument("--cpu-seconds", type=int, default=2)
    p.add_argument("--wall-seconds", type=float, default=4.0)
    p.add_argument("--isolation", default="auto", choices=["auto", "namespaces", "userns", "rlimits"])
    p.add_argument("--only", default=None, help="comma-separated problem names (default: all)")
    args = p.parse_args(argv)
    console = Console(width=120)
    try:
        cfg = TestcaseConfig(args.candidates, args.references, args.agree, args.min_valid, args.pass_refs, args.seed)
        limits = SandboxLimits(cpu_seconds=args.cpu_seconds, wall_seconds=args.wall_seconds, workers=args.workers,
                               isolation=args.isolation)
        problems = list(CODE_PROBLEMS)
        if args.only:
            names = args.only.split(",")
            known = [pr.name for pr in problems]
            unknown = sorted(set(names) - set(known))
            if unknown:
                raise ConfigError(f"unknown code problem(s) {', '.join(unknown)}; known: {', '.join(known)}")
            problems = [pr for pr in problems if pr.name in names]
        total = sum(cfg.candidates * (1 + cfg.references) for pr in problems if not pr.special_judge)
        with Sandbox(limits) as sandbox:
            console.print(f"sandbox: isolation {sandbox.isolation}, {sandbox.workers} workers")
            columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()]
            with Progress(*columns, console=console, transient=True) as progress:
                task = progress.add_task("executions", total=total)
                outcomes = generate_tests(problems, sandbox, cfg, lambda n: progress.advance(task, n))
    except K15Error as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    table = Table("problem", "stage reached", "valid tests", "references passing")
    for o in outcomes:
        judged = STAGES.index(o.stage) >= STAGES.index("enough valid tests")
        passing = f"{len(o.passing)}/{len(o.references)}" if judged else "-"
        table.add_row(o.problem.name, o.stage, f"{len(o.tests)}/{o.candidates}" if o.candidates else "-", passing)
    console.print(table)
    for stage, count in stage_counts(outcomes):
        console.print(f"after stage '{stage}': {count} problems")
    records = to_records(outcomes)
    write_prompt_set(records, args.out)
    console.print(f"wrote {len(records)} code prompts to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
