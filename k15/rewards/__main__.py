"""Why was this answer or program scored as it was? Two checks, each printing one JSON line.

    python -m k15.rewards verify-math --response FILE --gold TEXT [--format auto|answer_tag|boxed|gsm8k|answer_is]
        {"correct": true|false, "reason": "...", "answer": "..."|null, "format": "..."}
        answer: the text compared (or refused); format: the one that gave it (auto: the one that matched,
        "auto" when none did or several disagreed). Formats and reason codes: k15/rewards/answers.py
    python -m k15.rewards run-code --program FILE --tests FILE [--isolation auto] [--allow-weak] [--python PATH]
        {"passed": N, "total": M, "status": "...", "seconds": S}
        tests: a JSON list of {"input": stdin text, "output": expected stdout}. Exit status 0
        whenever the sandbox itself worked, whatever the program did. Isolation: namespaces as root,
        userns otherwise; where neither works it refuses (exit 2) unless --allow-weak (k15/rewards/sandbox.py).

Unreadable input or a failing sandbox: one line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from k15.errors import DataError, K15Error
from k15.rewards.answers import FORMATS
from k15.rewards.sandbox import ISOLATIONS


def read_text(path: str, what: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        why = exc.strerror if isinstance(exc, OSError) else exc
        raise DataError(f"cannot read the {what} file {path}: {why}") from None


def verify_math_command(args: argparse.Namespace) -> dict:
    from k15.rewards.answers import find_answer
    from k15.rewards.math import MathConfig, verify_math

    cfg, response = MathConfig(), read_text(args.response, "response")
    verdict = verify_math(response, args.gold, cfg, args.format)
    found = find_answer(response, args.format, cfg.max_answer_chars)  # only for its format: finding is cheap
    return {"correct": verdict.reward == 1.0, "reason": verdict.reason, "answer": verdict.answer, "format": found.format}


def run_code_command(args: argparse.Namespace) -> dict:
    from k15.rewards.code import check_tests, run_tests
    from k15.rewards.sandbox import Sandbox, SandboxLimits

    program = read_text(args.program, "program")
    try:
        tests = json.loads(read_text(args.tests, "tests"))
    except json.JSONDecodeError as exc:
        raise DataError(f"{args.tests}: not valid JSON ({exc.msg})") from None
    tests = check_tests(tests, args.tests)
    limits = SandboxLimits(cpu_seconds=args.cpu_seconds, wall_seconds=args.wall_seconds, memory_mb=args.memory_mb,
                           isolation=args.isolation, allow_weak=args.allow_weak, python=args.python)
    with Sandbox(limits) as sandbox:
        result = run_tests(sandbox, program, tests)
    return {"passed": result.passed, "total": result.total, "status": result.status, "seconds": result.seconds}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m k15.rewards", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    math_cmd = commands.add_parser("verify-math", help="score one response against a gold answer")
    math_cmd.add_argument("--response", required=True, help="file holding the model's response")
    math_cmd.add_argument("--gold", required=True, help="the reference answer, e.g. '\\frac{1}{2}'")
    math_cmd.add_argument("--format", default="auto", choices=FORMATS, help="how the response gives its answer")
    code_cmd = commands.add_parser("run-code", help="run one program on test cases in the sandbox")
    code_cmd.add_argument("--program", required=True, help="a Python source file")
    code_cmd.add_argument("--tests", required=True, help='JSON list of {"input": ..., "output": ...}')
    code_cmd.add_argument("--cpu-seconds", type=int, default=2)
    code_cmd.add_argument("--wall-seconds", type=float, default=4.0)
    code_cmd.add_argument("--memory-mb", type=int, default=512)
    code_cmd.add_argument("--isolation", default="auto", choices=ISOLATIONS)
    code_cmd.add_argument("--allow-weak", action="store_true",
                          help="without any isolation, run the program under rlimits only instead of refusing")
    code_cmd.add_argument("--python", default="", help="the program's interpreter (default: ours, if we may run it)")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    args = parser.parse_args(argv)
    try:
        out = verify_math_command(args) if args.command == "verify-math" else run_code_command(args)
    except K15Error as exc:
        if args.debug:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
