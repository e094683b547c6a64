"""A sandbox for untrusted Python programs, and a pool that runs many of them in parallel.

Each execution gets a private working directory (removed afterwards), stdin from a file, stdout
and stderr to files capped by RLIMIT_FSIZE, an environment of our own (none of the trainer's
variables), CPU-time / address-space / open-file limits, a wall-time limit, and a clean interpreter.
Every pool slot has a long-lived server (sandbox_child.py, a stdlib-only Python) that forks one
launcher per execution, so the trainer itself never forks with `preexec_fn`. The program runs in a
fork of that server's interpreter, which never ran untrusted code: ~6 ms per execution against ~14
with an exec'd `python -S` (`fresh_interpreter=True`; benchmarks/RESULTS.md, "Sandbox").

What is enforced depends on the privileges we have (`SandboxLimits.isolation`):
- "namespaces" (root; "auto" picks it): a network namespace with only a loopback that is down (no
  network at all), a pid namespace per execution (the trainer is invisible, and everything the
  program started dies with it), a mount namespace with a chroot into a read-only tmpfs root that
  holds only the interpreter, the system libraries, four devices and the program's directory, a
  fresh size-limited tmpfs (no trainer files, no /proc, no shared /tmp, no host disk), and a uid
  of its own per pool slot, so RLIMIT_NPROC really limits processes (as root it would not) and the
  program can signal nothing of ours.
  The network and mount namespaces are made once per slot and reused, like the pre-created
  cgroups of the paper's sandbox (k15-paper.md §11): nothing of an execution outlives it there.
- "userns" (not root; "auto" picks it when unprivileged user namespaces work): the same jail,
  network and pid namespaces, made inside a user namespace per slot that maps only our own uid.
  The program runs as that uid without any capability (no other uid can be mapped without root);
  RLIMIT_NPROC counts per user namespace, so per slot, as in "namespaces".
- "rlimits" (only when asked for, or with `allow_weak`): the limits above, plus Python audit hooks
  that refuse sockets, new processes, signals and ctypes. The program runs as the trainer's user;
  a determined program can get around the hooks (and a setsid'd child outlives the process-group
  kill), and the trainer's files stay readable: use it only for trusted programs, e.g. the
  reference solutions of the test-case pipeline.
"auto" tries "namespaces" (as root), then "userns"; when neither works it refuses to start, with
one line that says why (REFUSAL), unless `allow_weak` lets it fall back to "rlimits". A mode found
unavailable is not tried again in this process (_UNAVAILABLE), so a refusal costs nothing.
The programs run with `python` (default: the trainer's interpreter, or the system python3 when the
user we run as cannot execute that one); its prefix is bound into the jail.
Not enforced: a memory limit for all processes of an execution together (RLIMIT_AS is per process:
up to max_processes x memory_mb; the tmpfs adds disk_mb), and with "rlimits", any disk quota beyond
RLIMIT_FSIZE per file.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import marshal
import os
import queue
import random
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import weakref
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from k15.errors import ConfigError, K15Error

log = logging.getLogger(__name__)

CHILD = str(Path(__file__).with_name("sandbox_child.py"))
ISOLATIONS = ("auto", "namespaces", "userns", "rlimits")
JAILED = ("namespaces", "userns")
PROGRAM_ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": "/work", "LANG": "C.UTF-8", "PYTHONHASHSEED": "0"}
STDERR_TAIL = 2000
UID_BLOCK, UID_BLOCKS = 256, 1 << 20  # each Sandbox draws its own block of uids, one per slot
REFUSAL = ("sandbox: refusing to run untrusted code without isolation ({why}); set rewards.sandbox.allow_weak=true "
           "(run-code: --allow-weak) to run it under rlimits and audit hooks only, which is weak")
_UNAVAILABLE: dict[tuple, str] = {}  # (isolation, euid, python) -> why the kernel refused it in this process


class SandboxError(K15Error):
    """The sandbox itself failed (not the program): no verdict can be given."""


class IsolationUnavailable(SandboxError):
    """The server could not make its namespaces: the kernel or our privileges refuse them."""


@dataclass
class SandboxLimits:
    cpu_seconds: int = 2  # RLIMIT_CPU is whole seconds
    wall_seconds: float = 4.0
    memory_mb: int = 512  # address space, per process
    max_processes: int = 16  # per execution (threads count too)
    max_output_bytes: int = 1 << 20  # stdout, stderr and any file the program writes
    max_open_files: int = 64
    disk_mb: int = 16  # the program's directory (a tmpfs, with namespaces): all files together
    max_files: int = 256  # files and directories in it
    fresh_interpreter: bool = False  # exec `python -S` per run, instead of forking a clean pre-started one
    workers: int = 0  # parallel executions; 0 = one per CPU
    isolation: str = "auto"  # auto | namespaces (root) | userns (user namespaces) | rlimits (weak)
    allow_weak: bool = False  # when no isolation works, run programs under rlimits only instead of refusing
    python: str = ""  # the programs' interpreter; "": ours, or the system python3 if we may not execute ours
    uid_base: int = 1_000_000_000  # as root, slots run under uids from a random block above this (no user entries)

    def __post_init__(self) -> None:
        if self.isolation not in ISOLATIONS:
            raise ConfigError(f"sandbox isolation must be one of {', '.join(ISOLATIONS)}, got {self.isolation!r}")
        if self.cpu_seconds < 1 or self.wall_seconds <= 0 or self.memory_mb < 32 or self.max_processes < 1:
            raise ConfigError("sandbox limits must be positive (cpu_seconds >= 1, memory_mb >= 32)")
        if not 0 <= self.workers <= UID_BLOCK:
            raise ConfigError(f"sandbox workers must be in 0..{UID_BLOCK} (0: one per CPU), got {self.workers}")
        if self.python and not os.path.isabs(self.python):
            raise ConfigError(f"sandbox python must be an absolute path, got {self.python!r}")


@dataclass
class ExecResult:
    status: str  # ok | runtime_error | timeout | memory | output_limit | killed
    stdout: str
    stderr: str  # the last STDERR_TAIL characters
    exit_code: int | None
    signal: int | None
    seconds: float  # wall time of the whole execution, sandbox setup included
    cpu_seconds: float


def sandbox_python(setting: str) -> str:
    """The interpreter of the servers and programs. Ours by default (run with -S: no venv packages);
    when the user we run as cannot execute it (e.g. a process that dropped root's privileges, with
    the interpreter under /root), the system python3: a program's verdict may then depend on that
    Python's version, so it is logged."""
    if setting:
        if not os.access(setting, os.X_OK):
            raise SandboxError(f"sandbox python {setting} is not an interpreter this user can execute")
        return setting
    ours = getattr(sys, "_base_executable", None) or sys.executable
    if os.access(ours, os.X_OK):
        return ours
    system = shutil.which("python3", path=PROGRAM_ENV["PATH"])
    if system is None:
        raise SandboxError(f"this user cannot execute {ours} and there is no python3 on {PROGRAM_ENV['PATH']}; "
                           "set rewards.sandbox.python")
    log.warning("sandbox: this user cannot execute %s; programs run with %s", ours, system)
    return system


def classify(report: dict, limits: SandboxLimits, stderr: str, stdout_bytes: int) -> str:
    sig = report.get("signal")
    out_of_cpu = sig == signal.SIGXCPU or (sig == signal.SIGKILL and report.get("cpu_seconds", 0) >= limits.cpu_seconds)
    if report.get("wall_timeout") or out_of_cpu:
        return "timeout"
    if sig == signal.SIGXFSZ or stdout_bytes > limits.max_output_bytes:
        return "output_limit"
    if sig is not None:
        return "killed"
    if report.get("exit_code") == 0:
        return "ok"
    return "memory" if "MemoryError" in stderr else "runtime_error"


class _Server:
    """One sandbox_child.py server per pool slot (with namespaces: the builder of its jail), started on first use."""

    def __init__(self, python: str):
        self.python = python
        self.proc: subprocess.Popen | None = None
        self.root: str | None = None  # the jail's mountpoint: an empty directory, seen from the host

    def start(self, isolation: str) -> None:
        """The server dies with the thread that starts it (PR_SET_PDEATHSIG follows the parent
        thread); a dead server is started again on the next request."""
        self.root = tempfile.mkdtemp(prefix="k15-sandbox-root-") if isolation in JAILED else None
        setup = marshal.dumps({"isolation": isolation, "root": self.root}).hex()
        # Not -I: that would ignore PYTHONHASHSEED, which the programs (forks of this) inherit.
        self.proc = subprocess.Popen(
            [self.python, "-S", "-s", "-B", CHILD, setup], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            env={"PYTHONHASHSEED": "0"}, cwd="/", start_new_session=True, bufsize=0,
        )
        hello = self._reply(30.0)
        if not hello.get("ready"):
            self.stop()
            if "error" in hello:  # the server ran and the kernel said no
                error = IsolationUnavailable(f"sandbox setup failed: {hello['error']}")
                # no permission is for good; a full table (ENOSPC: user namespaces at their maximum) may pass
                error.permanent = hello.get("errno") in (errno.EPERM, errno.EACCES, errno.EINVAL, errno.ENOSYS)
                raise error
            raise SandboxError("sandbox setup failed: no answer")

    def request(self, cfg: dict, isolation: str, timeout: float) -> dict:
        if self.proc is None or self.proc.poll() is not None:
            self.stop()  # a dead one leaves pipes and its jail's mountpoint to clean up
            self.start(isolation)
        cfg = {**cfg, "root": self.root}
        data = marshal.dumps(cfg)
        try:
            self.proc.stdin.write(len(data).to_bytes(4, "little") + data)
            return self._reply(timeout)
        except OSError as exc:
            self.stop()
            raise SandboxError(f"sandbox server failed: {exc}") from None

    def _reply(self, timeout: float) -> dict:
        try:
            header = self._read(4, timeout)
            reply = self._read(int.from_bytes(header, "little"), timeout)
        except SandboxError as exc:
            self.stop()
            raise SandboxError(f"sandbox server failed: {exc}") from None
        return marshal.loads(reply) if reply else {}  # marshal ignores a second report after the first

    def _read(self, n: int, timeout: float) -> bytes:
        data = b""
        while len(data) < n:
            poller = select.poll()  # not select(): a big trainer may hold fds above FD_SETSIZE
            poller.register(self.proc.stdout, select.POLLIN)
            if not poller.poll(timeout * 1000):
                raise SandboxError("no answer in time")
            chunk = os.read(self.proc.stdout.fileno(), n - len(data))
            if not chunk:
                raise SandboxError(f"the server exited with {self.proc.wait()}")
            data += chunk
        return data

    def stop(self) -> None:
        if self.proc is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
            for pipe in (self.proc.stdin, self.proc.stdout):
                pipe.close()
            self.proc = None
        if self.root is not None:
            with contextlib.suppress(OSError):
                os.rmdir(self.root)
            self.root = None


def _stop_servers(servers: list[_Server]) -> None:
    for server in servers:
        server.stop()


class Sandbox:
    """Runs programs under `limits`, up to `limits.workers` at once (thread-safe)."""

    def __init__(self, limits: SandboxLimits | None = None):
        self.limits = limits or SandboxLimits()
        self.workers = self.limits.workers or os.cpu_count() or 1
        self.python = sandbox_python(self.limits.python)
        self.is_root = os.geteuid() == 0
        # A block of uids of our own: sandboxes in other processes (or this one) share no NPROC count.
        first = self.limits.uid_base + UID_BLOCK * random.SystemRandom().randrange(UID_BLOCKS)
        self.uids = [first + i for i in range(self.workers)]
        self._servers = [_Server(self.python) for _ in range(self.workers)]
        self._slots: queue.Queue = queue.Queue()
        for i in range(self.workers):
            self._slots.put(i)
        self._executor = ThreadPoolExecutor(self.workers, thread_name_prefix="sandbox")
        self._cleanup = weakref.finalize(self, _stop_servers, self._servers)  # also at exit if never closed
        try:
            self.isolation = self._choose_isolation()
        except BaseException:
            self.close()
            raise

    def _choose_isolation(self) -> str:
        wanted = self.limits.isolation
        if wanted == "rlimits":
            if self.is_root:
                log.warning("sandbox: isolation=rlimits as root: programs run as root, contained only by rlimits and "
                            "audit hooks; use it for trusted programs only")
            return self._start("rlimits")
        # As root a user namespace maps the program to the host's root, whom RLIMIT_NPROC does not limit:
        # root gets "namespaces" (slot uids) or nothing
        modes = [wanted] if wanted != "auto" else ["namespaces"] if self.is_root else ["userns"]
        failures = []
        for mode in modes:
            why = self._try(mode)
            if why is None:
                return mode
            failures.append(why)
        if not self.limits.allow_weak:
            raise SandboxError(REFUSAL.format(why="; ".join(failures)))
        log.warning("sandbox: no isolation (%s); allow_weak: programs run under rlimits and audit hooks only",
                    "; ".join(failures))
        return self._start("rlimits")

    def _try(self, mode: str) -> str | None:
        """None when `mode` works here, else why not."""
        if mode == "namespaces" and not self.is_root:
            return "namespaces: needs root"
        if mode == "userns" and self.is_root:
            return "userns: not as root (the program would be the host's root, exempt from the process limit); use namespaces"
        key = (mode, os.geteuid(), self.python)
        if key in _UNAVAILABLE:
            return _UNAVAILABLE[key]
        try:
            self._start(mode)
            return None
        except IsolationUnavailable as exc:
            why = f"{mode}: {exc}"
            if getattr(exc, "permanent", True):  # remembered: later sandboxes refuse without probing again
                _UNAVAILABLE[key] = why
        except SandboxError as exc:
            why = f"{mode}: {exc}"
        _stop_servers(self._servers)
        return why

    def _start(self, mode: str) -> str:
        """Use `mode` from now on, after one program ran correctly under it."""
        self.isolation = mode
        self._probe()
        return mode

    def _probe(self) -> None:
        result = self.run("print(6 * 7)", "")
        if (result.status, result.stdout) != ("ok", "42\n"):
            why = result.stderr.strip()[-200:]
            raise SandboxError(f"sandbox probe failed: status {result.status}, stderr {why!r}")

    def run(self, program: str, stdin: str = "") -> ExecResult:
        """Run one program on one input. Raises SandboxError only when the sandbox itself failed."""
        slot = self._slots.get()
        try:
            return self._run(program, stdin, slot)
        finally:
            self._slots.put(slot)

    def run_many(self, jobs: list[tuple[str, str]]) -> list[ExecResult]:
        """(program, stdin) pairs run in parallel; results in the same order."""
        return list(self._executor.map(lambda job: self.run(*job), jobs))

    def submit(self, program: str, stdin: str = "") -> Future:
        return self._executor.submit(self.run, program, stdin)

    def close(self) -> None:
        self._executor.shutdown(wait=True)
        self._cleanup()

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _run(self, program: str, stdin: str, slot: int) -> ExecResult:
        lim = self.limits
        uid = self.uids[slot] if self.isolation == "namespaces" else None
        workdir = Path(tempfile.mkdtemp(prefix="k15-sandbox-"))  # mode 0700: private to us
        try:
            work = workdir / "work"  # rlimits only: in a jail, /work is a tmpfs made by the launcher
            if self.isolation not in JAILED:
                work.mkdir()
                (work / "main.py").write_text(program, encoding="utf-8")
            (workdir / "stdin").write_text(stdin, encoding="utf-8")
            for name in ("stdout", "stderr"):
                (workdir / name).touch()
            cfg = {
                "isolation": self.isolation, "workdir": str(work), "program": program, "uid": uid,
                "stdin": str(workdir / "stdin"), "stdout": str(workdir / "stdout"), "stderr": str(workdir / "stderr"),
                "python": self.python, "env": PROGRAM_ENV, "fresh_interpreter": lim.fresh_interpreter,
                "cpu_seconds": lim.cpu_seconds, "wall_seconds": lim.wall_seconds, "memory_bytes": lim.memory_mb << 20,
                "max_output_bytes": lim.max_output_bytes + 1, "max_open_files": lim.max_open_files,
                "max_processes": lim.max_processes, "disk_bytes": lim.disk_mb << 20, "max_files": lim.max_files,
            }
            start = time.perf_counter()
            # The launcher enforces the wall time; the extra seconds here only catch a stuck server.
            report = self._servers[slot].request(cfg, self.isolation, lim.wall_seconds + 5)
            seconds = time.perf_counter() - start
            if "error" in report or not report:
                raise SandboxError(f"sandbox failed: {report.get('error', 'no report')}")
            return self._result(workdir, report, seconds)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)

    def _result(self, workdir: Path, report: dict, seconds: float) -> ExecResult:
        cap = self.limits.max_output_bytes
        with open(workdir / "stdout", "rb") as f:
            out = f.read(cap + 1)
        stderr = (workdir / "stderr").read_bytes()[-STDERR_TAIL:].decode("utf-8", "replace")
        status = classify(report, self.limits, stderr, len(out))
        return ExecResult(
            status=status, stdout=out[:cap].decode("utf-8", "replace"), stderr=stderr,
            exit_code=report.get("exit_code"), signal=report.get("signal"), seconds=round(seconds, 4),
            cpu_seconds=report.get("cpu_seconds", 0.0),
        )
