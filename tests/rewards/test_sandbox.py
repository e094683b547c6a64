"""The sandbox runs ordinary programs faithfully: stdin, stdout, exit status, limits, parallelism."""

import os
import signal
import tempfile
import textwrap
import time

import pytest

from k15.rewards.sandbox import PROGRAM_ENV, Sandbox, SandboxLimits
from tests.rewards_helpers import FAST


@pytest.fixture(scope="module", params=[False, True], ids=["forked", "fresh_interpreter"])
def sandbox(request):
    """Both ways of starting a program: a fork of the slot's clean interpreter, or `python -S`."""
    with Sandbox(SandboxLimits(**FAST, fresh_interpreter=request.param)) as sb:
        yield sb


def test_both_ways_behave_like_a_python_script(sandbox):
    program = textwrap.dedent("""
        import atexit, pickle, sys, threading
        class Point:
            pass
        atexit.register(lambda: print('at exit'))
        def work():
            print(pickle.loads(pickle.dumps(Point())).__class__.__name__, __name__, sys.argv)
        threading.Thread(target=work).start()  # joined before exit, as by the interpreter
        sys.stderr.write('warn\\n')
        exit(4)
    """)
    r = sandbox.run(program)
    assert (r.stdout, r.stderr, r.exit_code) == ("Point __main__ ['main.py']\nat exit\n", "warn\n", 4)
    r = sandbox.run("def f():\n    raise ValueError('bad')\nf()")
    assert r.stderr.startswith("Traceback (most recent call last):") and r.stderr.endswith("ValueError: bad\n")
    assert 'File "main.py", line 2, in f' in r.stderr


def test_stdin_to_stdout(sandbox):
    r = sandbox.run("n = int(input())\nprint(sum(map(int, input().split())) * n)\n", "2\n1 2 3\n")
    assert (r.status, r.stdout, r.exit_code) == ("ok", "12\n", 0)


def test_exit_builtins_and_exit_codes(sandbox):
    assert sandbox.run("print('a')\nexit()\nprint('b')").stdout == "a\n"  # exit() works without `site`
    r = sandbox.run("import sys\nsys.exit(3)")
    assert (r.status, r.exit_code) == ("runtime_error", 3)
    r = sandbox.run("1/0")
    assert r.status == "runtime_error" and "ZeroDivisionError" in r.stderr


def test_environment_is_our_own(sandbox, monkeypatch):
    monkeypatch.setenv("K15_TRAINER_TOKEN", "trainer-only")
    r = sandbox.run("import os\nprint(sorted(os.environ.items()))")
    assert r.stdout == f"{sorted(PROGRAM_ENV.items())}\n"


def test_runs_are_deterministic_across_slots(sandbox):
    """Hash randomization is off (PYTHONHASHSEED=0): printing a set gives the same order every time,
    so one program gets one reward, whichever slot runs it."""
    program = "print(list({'apple', 'banana', 'cherry', 'date', 'elder', 'fig'}))"
    outputs = {r.stdout for r in sandbox.run_many([(program, "")] * 6)}
    assert len(outputs) == 1


def test_results_keep_their_order_and_run_in_parallel(sandbox):
    jobs = [(f"import time\ntime.sleep(0.3)\nprint({i})", "") for i in range(6)]
    start = time.perf_counter()
    results = sandbox.run_many(jobs)
    elapsed = time.perf_counter() - start
    assert [r.stdout for r in results] == [f"{i}\n" for i in range(6)]
    assert elapsed < 6 * 0.3 * 0.8, f"{elapsed:.2f}s: no faster than one at a time"  # 2 workers: ~0.9 s


def test_private_directory_is_writable_and_removed(monkeypatch, tmp_path):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    with Sandbox(SandboxLimits(**{**FAST, "workers": 1})) as sb:
        r = sb.run("open('scratch.txt', 'w').write('x' * 10)\nimport os\nprint(sorted(os.listdir('.')))")
        assert r.stdout == "['main.py', 'scratch.txt']\n"
    assert list(tmp_path.iterdir()) == []


def test_a_dead_server_is_replaced(tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    with Sandbox(SandboxLimits(**{**FAST, "workers": 1})) as sb:
        os.kill(sb._servers[0].proc.pid, signal.SIGKILL)
        sb._servers[0].proc.wait()
        assert sb.run("print(1)").stdout == "1\n"
    assert list(tmp_path.iterdir()) == []


def test_stdout_is_capped(sandbox):
    r = sandbox.run("print('x' * 200_000)")
    assert r.status == "output_limit" and len(r.stdout) == sandbox.limits.max_output_bytes


def test_bad_limits_fail_clearly():
    with pytest.raises(Exception, match="isolation must be one of"):
        SandboxLimits(isolation="docker")


@pytest.mark.skipif(os.geteuid() != 0, reason="namespaces need root")
def test_root_gets_namespaces_and_runs_programs_unprivileged(sandbox):
    assert sandbox.isolation == "namespaces"
    r = sandbox.run("import os\nprint(os.getuid(), os.getgid(), os.getpid(), sorted(os.listdir('/')))")
    uid, gid, pid, root = r.stdout.split(" ", 3)
    assert int(uid) in sandbox.uids and gid == uid and int(uid) >= sandbox.limits.uid_base
    assert pid == "2"  # pid 1 is the namespace's init: the trainer is not in this pid namespace
    assert "'work'" in root and "'proc'" not in root and "'home'" not in root


def test_weak_isolation_still_limits_time_memory_env_and_sockets(monkeypatch):
    monkeypatch.setenv("K15_TRAINER_TOKEN", "trainer-only")
    with Sandbox(SandboxLimits(**{**FAST, "isolation": "rlimits"})) as sb:
        assert sb.isolation == "rlimits"
        assert sb.run("while True: pass").status == "timeout"
        assert sb.run("x = bytearray(2 << 30)").status == "memory"
        assert "trainer-only" not in sb.run("import os\nprint(os.environ)").stdout
        r = sb.run("import socket\nsocket.socket()")
        assert r.status == "runtime_error" and "socket.__new__ is not allowed" in r.stderr
