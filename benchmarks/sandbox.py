"""Sandbox throughput: executions per second of the sandbox pool against one plain `subprocess.run` each.

Both run the same small program (a typical solution: read numbers, print their sum) on the same
inputs, in one process, in alternating repetitions, so load from other jobs hits both alike. The
plain side is what a trainer without a sandbox would do: `subprocess.run` of the same interpreter
with the same flags, one execution at a time, no isolation. The sandbox side is `Sandbox.run_many`
with its default pool (one worker per CPU) and full isolation; by default each program runs in a
fork of the slot's clean, pre-started interpreter (`--fresh-interpreter`: `python -S` per run).
Also printed: the sandbox with one worker, i.e. the cost of one isolated execution. The last line printed is
`sandbox ratio=X.XX` (pool executions/s over plain executions/s, median over repetitions).

With `--userns-vs-root` (run as root) it compares the two isolations instead: the same pool, the same
interpreter (`--python`, default the system python3, which any user may execute) and the same
programs (a trivial `print(6 * 7)` and the typical one above), once as root ("namespaces", in this
process) and once as an unprivileged user ("userns", in a fork of this process that dropped root's
privileges and keeps its own sandbox), alternating within each repetition. The last line printed is
`sandbox userns_vs_root ratio=X.XX` (userns over root programs/s for the typical program, median).

    python benchmarks/sandbox.py [--executions 200] [--repeats 3] [--workers 0] [--fresh-interpreter]
    python benchmarks/sandbox.py --userns-vs-root [--executions 200] [--repeats 3] [--python /usr/bin/python3]
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from k15.rewards.sandbox import Sandbox, SandboxLimits  # noqa: E402

PROGRAM = "import sys\ndata = sys.stdin.read().split()\nprint(sum(int(x) for x in data[1:]))\n"
TRIVIAL = "print(6 * 7)\n"


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


def programs_per_second(sandbox: Sandbox, kind: str, stdins: list[str]) -> float:
    if kind == "typical":
        return pooled(sandbox, stdins)
    start = time.perf_counter()
    results = sandbox.run_many([(TRIVIAL, "")] * len(stdins))
    rate = len(stdins) / (time.perf_counter() - start)
    assert all(r.stdout == "42\n" for r in results), results[0]
    return rate


class UnprivilegedSide:
    """A fork of this (root) process that dropped root's privileges for good and keeps a sandbox:
    asked for a kind of program over a pipe, it answers with programs per second."""

    def __init__(self, limits: SandboxLimits, stdins: list[str]):
        to_child, self._to_child = os.pipe()
        self._from_child, from_child = os.pipe()
        self.pid = os.fork()
        if self.pid == 0:
            os.close(self._to_child), os.close(self._from_child)
            self._serve(limits, stdins, os.fdopen(to_child), os.fdopen(from_child, "w"))
        os.close(to_child), os.close(from_child)
        self._send, self._receive = os.fdopen(self._to_child, "w"), os.fdopen(self._from_child)
        self.isolation = self._receive.readline().strip()
        if not self.isolation.startswith("userns"):
            raise SystemExit(f"the unprivileged side could not start: {self.isolation}")

    @staticmethod
    def _serve(limits, stdins, requests, replies) -> None:
        try:
            uid = 2_000_000_000 + random.SystemRandom().randrange(1 << 20)  # a uid of its own, no groups
            os.setgroups([])
            os.setresgid(uid, uid, uid)
            os.setresuid(uid, uid, uid)
            with Sandbox(limits) as sandbox:
                print(f"{sandbox.isolation} uid {uid}", file=replies, flush=True)
                for kind in requests:
                    print(programs_per_second(sandbox, kind.strip(), stdins), file=replies, flush=True)
        except BaseException as exc:  # noqa: BLE001 -- reported to the parent
            print(f"{type(exc).__name__}: {exc}".replace("\n", " "), file=replies, flush=True)
        os._exit(0)

    def rate(self, kind: str) -> float:
        print(kind, file=self._send, flush=True)
        return float(self._receive.readline())

    def close(self) -> None:
        self._send.close()
        os.waitpid(self.pid, 0)
        self._receive.close()


def userns_vs_root(args: argparse.Namespace, stdins: list[str]) -> None:
    if os.geteuid() != 0:
        raise SystemExit("--userns-vs-root runs as root: it compares root's isolation with an unprivileged user's")
    limits = SandboxLimits(workers=args.workers, fresh_interpreter=args.fresh_interpreter, python=args.python)
    user = UnprivilegedSide(limits, stdins)
    try:
        with Sandbox(limits) as root:
            print(f"root: isolation {root.isolation}; unprivileged: isolation {user.isolation}; python {root.python}, "
                  f"pool of {root.workers}; {args.executions} programs per side and kind")
            for kind in ("trivial", "typical"):  # warm-up
                programs_per_second(root, kind, stdins[:10]), user.rate(kind)
            rows = []
            for rep in range(args.repeats):
                rates = {}
                for side in (["root", "userns"] if rep % 2 == 0 else ["userns", "root"]):
                    for kind in ("trivial", "typical"):
                        on_root = side == "root"
                        rates[side, kind] = programs_per_second(root, kind, stdins) if on_root else user.rate(kind)
                rows.append(rates)
                shown = ", ".join(f"{side} {kind} {rate:.1f}/s" for (side, kind), rate in rates.items())
                print(f"repeat {rep + 1}: {shown}")
    finally:
        user.close()
    med = {key: statistics.median(r[key] for r in rows) for key in rows[0]}
    for kind in ("trivial", "typical"):
        ratio = statistics.median(r["userns", kind] / r["root", kind] for r in rows)
        print(f"median programs/s, {kind}: root (namespaces) {med['root', kind]:.1f}, "
              f"unprivileged (userns) {med['userns', kind]:.1f}, ratio {ratio:.2f}")
    print(f"load average at end {os.getloadavg()[0]:.2f}")
    ratio = statistics.median(r["userns", "typical"] / r["root", "typical"] for r in rows)
    print(f"sandbox userns_vs_root ratio={ratio:.2f} root={med['root', 'typical']:.1f}/s "
          f"userns={med['userns', 'typical']:.1f}/s")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--executions", type=int, default=200, help="executions per side and repetition")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--workers", type=int, default=0, help="pool size (0: one per CPU)")
    p.add_argument("--fresh-interpreter", action="store_true", help="sandbox execs `python -S` per run")
    p.add_argument("--userns-vs-root", action="store_true", help="root's isolation against an unprivileged user's")
    p.add_argument("--python", default="/usr/bin/python3", help="with --userns-vs-root: both sides' interpreter")
    args = p.parse_args()
    stdins = inputs(args.executions)
    print(f"cpus {os.cpu_count()}, idle share before start {cpu_idle_fraction():.2f}")
    if args.userns_vs_root:
        return userns_vs_root(args, stdins)
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
