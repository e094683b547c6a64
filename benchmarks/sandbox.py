"""Sandbox throughput: executions per second of the sandbox pool against one plain `subprocess.run` each.

Both run the same small program (a typical solution: read numbers, print their sum) on the same
inputs, in one process, in alternating repetitions, so load from other jobs hits both alike. The
plain side is what a trainer without a sandbox would do: `subprocess.run` of the same interpreter
with the same flags, one execution at a time, no isolation. The sandbox side is `Sandbox.run_many`
with its default pool (one worker per CPU) and full isolation; by default each program runs in a
fork of the slot's clean, pre-started interpreter (`--fresh-interpreter`: `python -S` per run).
Also printed: the sandbox with one worker, i.e. the cost of one isolated execution. The last line printed is
`sandbox ratio=X.XX` (pool executions/s over plain executions/s, median over repetitions).

    python benchmarks/sandbox.py [--executions 200] [--repeats 3] [--workers 0] [--fresh-interpreter]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from k15.rewards.sandbox import Sandbox, SandboxLimits  # noqa: E402

PROGRAM = "import sys\ndata = sys.stdin.read().split()\nprint(sum(int(x) for x in data[1:]))\n"


def inputs(n: int) -> list[str]:
    return [f"{k % 7 + 1}\n" + " ".join(str(k * j % 101) for j in range(k % 7 + 1)) + "\n" for k in range(n)]


def expected(stdin: str) -> str:
    return f"{sum(int(x) for x in stdin.split()[1:])}\n"


def plain(python: str, path: str, stdins: list[str]) -> float:
    start = time.perf_counter()
    for s in stdins:
        out = subprocess.run([python, "-S", "-s", "-B", path], input=s, capture_output=True, text=True, timeout=10)
        assert out.stdout == expected(s), out.stderr
    return len(stdins) / (time.perf_counter() - start)


def pooled(sandbox: Sandbox, stdins: list[str]) -> float:
    start = time.perf_counter()
    results = sandbox.run_many([(PROGRAM, s) for s in stdins])
    rate = len(stdins) / (time.perf_counter() - start)
    assert [r.stdout for r in results] == [expected(s) for s in stdins], results[0]
    return rate


def cpu_idle_fraction(seconds: float = 1.0) -> float:
    def sample() -> tuple[int, int]:
        fields = [int(x) for x in open("/proc/stat").readline().split()[1:]]
        return fields[3] + fields[4], sum(fields)

    idle0, total0 = sample()
    time.sleep(seconds)
    idle1, total1 = sample()
    return (idle1 - idle0) / max(1, total1 - total0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--executions", type=int, default=200, help="executions per side and repetition")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--workers", type=int, default=0, help="pool size (0: one per CPU)")
    p.add_argument("--fresh-interpreter", action="store_true", help="sandbox execs `python -S` per run")
    args = p.parse_args()
    stdins = inputs(args.executions)
    print(f"cpus {os.cpu_count()}, idle share before start {cpu_idle_fraction():.2f}")
    fresh = args.fresh_interpreter
    pool_limits = SandboxLimits(workers=args.workers, fresh_interpreter=fresh)
    with tempfile.TemporaryDirectory() as tmp, Sandbox(pool_limits) as pool, \
            Sandbox(SandboxLimits(workers=1, fresh_interpreter=fresh)) as single:
        path = os.path.join(tmp, "main.py")
        with open(path, "w") as f:
            f.write(PROGRAM)
        how = "python -S per run" if fresh else "forks of a clean interpreter"
        print(f"sandbox isolation {pool.isolation}, {how}, pool of {pool.workers}; "
              f"{args.executions} executions per side")
        pooled(pool, stdins[:10]), pooled(single, stdins[:10]), plain(pool.python, path, stdins[:10])  # warm-up
        rows = []
        for rep in range(args.repeats):
            order = ["plain", "pool", "single"] if rep % 2 == 0 else ["single", "pool", "plain"]
            rates = {}
            for side in order:
                if side == "plain":
                    rates[side] = plain(pool.python, path, stdins)
                else:
                    rates[side] = pooled(pool if side == "pool" else single, stdins)
            rows.append(rates)
            print(f"repeat {rep + 1}: plain {rates['plain']:.1f}/s, sandbox pool {rates['pool']:.1f}/s, "
                  f"sandbox one worker {rates['single']:.1f}/s, ratio {rates['pool'] / rates['plain']:.2f}")
    med = {k: statistics.median(r[k] for r in rows) for k in rows[0]}
    print(f"median executions/s: plain subprocess.run {med['plain']:.1f}, sandbox pool {med['pool']:.1f}, "
          f"sandbox one worker {med['single']:.1f}")
    print(f"load average at end {os.getloadavg()[0]:.2f}")
    print(f"sandbox ratio={statistics.median(r['pool'] / r['plain'] for r in rows):.2f}")


if __name__ == "__main__":
    main()
