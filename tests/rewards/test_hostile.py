"""Every hostile program of the issue is contained, scores 0, and the trainer (this process) keeps running.

Each program gets a test case whose expected output is what it prints only if its attack worked, so
a sandbox that let the attack through would score it 1. Besides the score, each test checks on the
host side that nothing happened (files intact, no connection, no process left behind).
"""

import os
import socket
import textwrap
import time
import uuid

import pytest

from k15.rewards.code import run_tests
from tests.rewards_helpers import processes_of, sandbox, slot_uids  # noqa: F401

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="full isolation (namespaces, own uid) needs root")


def program(text: str) -> str:
    return textwrap.dedent(text).lstrip("\n")


def score(sb, source, expected, stdin=""):
    result = run_tests(sb, source, [{"input": stdin, "output": expected}])
    assert result.passed == 0, f"the attack worked: {result}"
    return result


def assert_still_works(sb):
    assert sb.run("print(6 * 7)").stdout == "42\n"
    assert not processes_of(slot_uids(sb)), "a sandboxed process outlived its execution"


def test_infinite_loop(sandbox):
    start = time.perf_counter()
    assert score(sandbox, "while True:\n    pass\nprint('done')", "done\n").status == "timeout"
    assert time.perf_counter() - start < sandbox.limits.wall_seconds + 1
    assert_still_works(sandbox)


def test_sleeping_forever(sandbox):
    assert score(sandbox, "import time\ntime.sleep(3600)\nprint('done')", "done\n").status == "timeout"
    assert_still_works(sandbox)


def test_fork_bomb(sandbox):
    bomb = program("""
        import os
        while True:
            try:
                os.fork()
            except OSError:
                pass
        print('bomb')
    """)
    start = time.perf_counter()
    score(sandbox, bomb, "bomb\n")
    assert time.perf_counter() - start < sandbox.limits.wall_seconds + 2
    assert_still_works(sandbox)


def test_fork_bomb_meets_the_process_limit(sandbox):
    count = program("""
        import os, time
        n = 0
        try:
            while True:
                if os.fork() == 0:
                    time.sleep(60)
                n += 1
        except OSError:
            print(n)
    """)
    r = sandbox.run(count)
    assert r.status == "ok" and int(r.stdout) < sandbox.limits.max_processes  # RLIMIT_NPROC holds, even as root
    assert_still_works(sandbox)  # ... and the sleeping children died with the namespace


def test_background_process_dies_with_the_program(sandbox):
    daemon = program("""
        import os, time
        if os.fork() == 0:
            os.setsid()
            time.sleep(60)
        print('parent done')
    """)
    assert sandbox.run(daemon).stdout == "parent done\n"
    assert_still_works(sandbox)


def test_huge_allocation(sandbox):
    assert score(sandbox, "x = bytearray(8 << 30)\nprint('allocated')", "allocated\n").status == "memory"
    grow = "chunks = []\nfor _ in range(64):\n    chunks.append(bytearray(64 << 20))\nprint('allocated')"
    assert score(sandbox, grow, "allocated\n").status == "memory"
    assert_still_works(sandbox)


def test_deleting_files_outside_its_directory(sandbox, tmp_path):
    canary = tmp_path / "canary.txt"
    canary.write_text("keep me")
    os.chmod(tmp_path, 0o777)  # even a world-writable directory and file must be out of reach
    os.chmod(canary, 0o666)
    attack = program(f"""
        import os, shutil
        os.remove({str(canary)!r})
        shutil.rmtree({str(tmp_path)!r})
        shutil.rmtree('/usr/lib')
        print('deleted')
    """)
    score(sandbox, attack, "deleted\n")
    assert canary.read_text() == "keep me" and os.path.isdir("/usr/lib")
    assert_still_works(sandbox)


def test_writing_files_outside_its_directory(sandbox, tmp_path):
    os.chmod(tmp_path, 0o777)  # world-writable: a uid of its own alone would not stop this
    marker = f"/tmp/k15-escape-{uuid.uuid4().hex}"
    attack = program(f"""
        escaped = False
        for path in [{str(tmp_path / 'x')!r}, {marker!r}, '../x', '/dev/shm/x', '/x']:
            try:
                open(path, 'w').write('x')
                escaped = True
            except OSError:
                pass
        open('inside.txt', 'w').write('its own directory is writable')
        print('escaped' if escaped else 'contained')
    """)
    score(sandbox, attack, "escaped\n")
    assert sandbox.run(attack).stdout == "contained\n"
    assert not (tmp_path / "x").exists() and not os.path.exists(marker) and not os.path.exists("/dev/shm/x")
    assert_still_works(sandbox)


def test_filling_the_disk(sandbox):
    attack = program("""
        n = 0
        try:
            while True:
                open(f'f{n}', 'w').write('x' * 60_000)
                n += 1
        except OSError as exc:
            print(n, exc.errno)
        print('filled' if n > 5000 else 'stopped')
    """)
    r = sandbox.run(attack)
    files, errno = map(int, r.stdout.split()[:2])
    assert files * 60_000 <= sandbox.limits.disk_mb << 20 and errno == 28  # ENOSPC: the tmpfs quota
    score(sandbox, attack, "filled\n")
    assert_still_works(sandbox)


def test_reading_the_trainers_environment(sandbox, monkeypatch):
    secret = f"secret-{uuid.uuid4().hex}"
    monkeypatch.setenv("K15_TRAINER_SECRET", secret)
    attack = program(f"""
        import os
        print(os.environ.get('K15_TRAINER_SECRET', ''))
        print(open('/proc/{os.getpid()}/environ').read())
    """)
    score(sandbox, attack, f"{secret}\n")
    r = sandbox.run(attack)
    assert secret not in r.stdout + r.stderr


def test_reading_the_trainers_files(sandbox, tmp_path):
    secret = f"weights-{uuid.uuid4().hex}"
    (tmp_path / "checkpoint.txt").write_text(secret)
    os.chmod(tmp_path, 0o755)
    os.chmod(tmp_path / "checkpoint.txt", 0o644)  # readable by any user: only the jail hides it
    attack = f"print(open({str(tmp_path / 'checkpoint.txt')!r}).read())"
    score(sandbox, attack, f"{secret}\n")
    assert secret not in sandbox.run(attack).stdout


def test_opening_sockets(sandbox):
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    server.setblocking(False)
    attack = program(f"""
        import socket
        s = socket.create_connection(('127.0.0.1', {server.getsockname()[1]}), timeout=1)
        s.sendall(b'hi')
        print('connected')
    """)
    try:
        assert score(sandbox, attack, "connected\n").status == "runtime_error"
        with pytest.raises(BlockingIOError):
            server.accept()  # nobody ever connected
    finally:
        server.close()
    assert sandbox.run("import socket\nprint(socket.gethostbyname('pypi.org'))").status == "runtime_error"
    assert_still_works(sandbox)


def test_killing_its_parent(sandbox):
    targets = [os.getpid()] + [s.proc.pid for s in sandbox._servers if s.proc is not None]
    attack = program(f"""
        import os, signal
        for pid in [os.getppid()] + {targets!r}:
            try:
                os.kill(pid, signal.SIGKILL)
                print('killed', pid)
            except OSError:
                pass
        if os.getuid() != 0 and os.getpid() < 10:  # only where a pid namespace makes -1 harmless
            try:
                os.kill(-1, signal.SIGKILL)
            except OSError:
                pass
        print('done')
    """)
    assert sandbox.run(attack).stdout == "done\n"
    score(sandbox, attack, f"killed {targets[0]}\ndone\n")
    assert all(s.proc.poll() is None for s in sandbox._servers if s.proc is not None)
    assert_still_works(sandbox)


def test_output_flood(sandbox):
    flood = "import sys\nwhile True:\n    sys.stdout.write('x' * 65536)"
    assert score(sandbox, flood, "x\n").status == "output_limit"
    assert_still_works(sandbox)


def test_escaping_privileges(sandbox):
    attack = program("""
        import ctypes, os
        try:
            os.setuid(0)
            print('root')
        except OSError:
            pass
        libc = ctypes.CDLL(None)
        if libc.umount2(b'/work', 2) == 0 or libc.unshare(0x10000000) == 0:  # unmount the jail, new user ns
            print('root')
    """)
    score(sandbox, attack, "root\n")
    assert_still_works(sandbox)
