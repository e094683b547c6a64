"""Every hostile program of the issue is contained, scores 0, and the trainer (this process) keeps running.

Each program gets a test case whose expected output is what it prints only if its attack worked, so
a sandbox that let the attack through would score it 1. Besides the score, each test checks on the
host side that nothing happened (files intact, no connection, no process left behind).

Every test runs twice: as root (isolation "namespaces") and as an unprivileged user (isolation
"userns", in a fork of this process that dropped root's privileges; tests/rewards/unprivileged.py).
The files a program attacks are made by the user running the sandbox, so as that user they are its
own files (as in the issue: "deleted the user's own files outside its working directory").
"""

import ctypes
import os
import shutil
import socket
import tempfile
import textwrap
import time
import uuid

import pytest

from k15.rewards.code import run_tests
from tests.rewards.unprivileged import as_user, leftovers, user_sandbox
from tests.rewards_helpers import sandbox  # noqa: F401


def both_users(body):
    """The test `body(sandbox)` as root and as an unprivileged user."""

    @pytest.mark.parametrize("user", ["root", "unprivileged"])
    def test(user, request):
        if user == "root":
            if os.geteuid() != 0:
                pytest.skip("isolation 'namespaces' needs root")
            body(request.getfixturevalue("sandbox"))
        else:
            as_user(in_user_sandbox, body)

    test.__name__, test.__doc__ = body.__name__, body.__doc__
    return test


def in_user_sandbox(body) -> None:
    with user_sandbox() as sb:
        assert sb.isolation == "userns"
        body(sb)


def program(text: str) -> str:
    return textwrap.dedent(text).lstrip("\n")


def score(sb, source, expected, stdin=""):
    result = run_tests(sb, source, [{"input": stdin, "output": expected}])
    assert result.passed == 0, f"the attack worked: {result}"
    return result


def assert_still_works(sb):
    assert sb.run("print(6 * 7)").stdout == "42\n"
    assert not leftovers(sb), "a sandboxed process outlived its execution"


def users_directory(mode: int) -> str:
    """A directory of the user running the sandbox, outside the program's: what it must not touch."""
    path = tempfile.mkdtemp(prefix="k15-hostile-")
    os.chmod(path, mode)
    return path


@both_users
def test_infinite_loop(sandbox):
    start = time.perf_counter()
    assert score(sandbox, "while True:\n    pass\nprint('done')", "done\n").status == "timeout"
    assert time.perf_counter() - start < sandbox.limits.wall_seconds + 1
    assert_still_works(sandbox)


@both_users
def test_sleeping_forever(sandbox):
    assert score(sandbox, "import time\ntime.sleep(3600)\nprint('done')", "done\n").status == "timeout"
    assert_still_works(sandbox)


@both_users
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


@both_users
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


@both_users
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


@both_users
def test_huge_allocation(sandbox):
    assert score(sandbox, "x = bytearray(8 << 30)\nprint('allocated')", "allocated\n").status == "memory"
    grow = "chunks = []\nfor _ in range(64):\n    chunks.append(bytearray(64 << 20))\nprint('allocated')"
    assert score(sandbox, grow, "allocated\n").status == "memory"
    assert_still_works(sandbox)


@both_users
def test_deleting_files_outside_its_directory(sandbox):
    home = users_directory(0o777)  # even a world-writable directory and file must be out of reach
    canary = os.path.join(home, "canary.txt")
    with open(canary, "w") as f:
        f.write("keep me")
    os.chmod(canary, 0o666)
    attack = program(f"""
        import os, shutil
        os.remove({canary!r})
        shutil.rmtree({home!r})
        shutil.rmtree('/usr/lib')
        print('deleted')
    """)
    try:
        score(sandbox, attack, "deleted\n")
        assert open(canary).read() == "keep me" and os.path.isdir("/usr/lib")
    finally:
        shutil.rmtree(home)
    assert_still_works(sandbox)


@both_users
def test_writing_files_outside_its_directory(sandbox):
    home = users_directory(0o777)  # world-writable: a uid of its own alone would not stop this
    outside = os.path.join(home, "x")
    marker = f"/tmp/k15-escape-{uuid.uuid4().hex}"
    attack = program(f"""
        escaped = False
        for path in [{outside!r}, {marker!r}, '../x', '/dev/shm/x', '/x']:
            try:
                open(path, 'w').write('x')
                escaped = True
            except OSError:
                pass
        open('inside.txt', 'w').write('its own directory is writable')
        print('escaped' if escaped else 'contained')
    """)
    try:
        score(sandbox, attack, "escaped\n")
        assert sandbox.run(attack).stdout == "contained\n"
        assert not os.path.exists(outside) and not os.path.exists(marker) and not os.path.exists("/dev/shm/x")
    finally:
        shutil.rmtree(home)
    assert_still_works(sandbox)


@both_users
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


@both_users
def test_reading_the_trainers_environment(sandbox):
    secret = f"secret-{uuid.uuid4().hex}"
    os.environ["K15_TRAINER_SECRET"] = secret
    attack = program(f"""
        import os
        print(os.environ.get('K15_TRAINER_SECRET', ''))
        print(open('/proc/{os.getpid()}/environ').read())
    """)
    try:
        score(sandbox, attack, f"{secret}\n")
        r = sandbox.run(attack)
        assert secret not in r.stdout + r.stderr
    finally:
        del os.environ["K15_TRAINER_SECRET"]


@both_users
def test_reading_the_trainers_files(sandbox):
    home = users_directory(0o755)
    checkpoint = os.path.join(home, "checkpoint.txt")
    secret = f"weights-{uuid.uuid4().hex}"
    with open(checkpoint, "w") as f:
        f.write(secret)
    os.chmod(checkpoint, 0o644)  # readable by any user: only the jail hides it
    attack = f"print(open({checkpoint!r}).read())"
    try:
        score(sandbox, attack, f"{secret}\n")
        assert secret not in sandbox.run(attack).stdout
    finally:
        shutil.rmtree(home)


@both_users
def test_every_bound_path_is_read_only_and_nosuid(sandbox):
    """File permissions alone would stop most writes (the program's uid owns nothing of the host's), but under
    userns a bound interpreter in the user's own home would be the program's own: the mounts must say read-only."""
    attack = program("""
        import os, sys
        for path in sorted({"/usr", "/bin", "/lib", sys.base_prefix, os.path.dirname(sys.executable)}):
            if os.path.exists(path):
                flags = os.statvfs(path).f_flag
                print(path, bool(flags & os.ST_RDONLY), bool(flags & os.ST_NOSUID))
        print("/work", bool(os.statvfs("/work").f_flag & os.ST_RDONLY))
    """)
    r = sandbox.run(attack)
    lines = r.stdout.splitlines()
    assert r.status == "ok" and len(lines) >= 3, r
    assert all(line.endswith("True True") for line in lines[:-1]), lines
    assert lines[-1] == "/work False"  # the one writable place


KEYCTL, ADD_KEY = {"x86_64": (250, 248), "aarch64": (219, 217)}.get(os.uname().machine, (None, None))
SESSION_KEYRING = -3  # KEY_SPEC_SESSION_KEYRING


@both_users
def test_reading_the_trainers_session_keyring(sandbox):
    """On a cluster the session keyring holds Kerberos / AFS tokens: a program gets an empty one of its own."""
    if KEYCTL is None:
        pytest.skip(f"no keyctl syscall numbers for {os.uname().machine} in this test")
    libc = ctypes.CDLL(None, use_errno=True)
    secret = f"token-{uuid.uuid4().hex}".encode()
    name = f"k15-test-{uuid.uuid4().hex[:8]}".encode()
    key = libc.syscall(ADD_KEY, b"user", name, secret, len(secret), SESSION_KEYRING)
    assert key > 0, os.strerror(ctypes.get_errno())  # the trainer holds the key in its session keyring
    attack = program(f"""
        import ctypes
        libc = ctypes.CDLL(None)
        key = libc.syscall({KEYCTL}, 10, {SESSION_KEYRING}, b"user", {name!r}, 0)  # KEYCTL_SEARCH
        buf = ctypes.create_string_buffer(256)
        n = libc.syscall({KEYCTL}, 11, key, buf, 256)  # KEYCTL_READ
        print(key, buf.raw[:max(n, 0)])
    """)
    try:
        r = sandbox.run(attack)
        assert r.status == "ok" and secret.decode() not in r.stdout + r.stderr, r
        assert r.stdout.startswith("-1 ")  # the search finds nothing: the program's keyring is empty
    finally:
        libc.syscall(KEYCTL, 3, key)  # KEYCTL_REVOKE


@both_users
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


@both_users
def test_killing_its_parent(sandbox):
    """The trainer and the servers are out of its sight; its own parent (the pid namespace's init,
    which reports how the program ended) ignores signals from inside (as "userns", it has the same uid)."""
    targets = [os.getpid()] + [s.proc.pid for s in sandbox._servers if s.proc is not None]
    attack = program(f"""
        import os, signal
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGKILL):
            try:
                os.kill(os.getppid(), sig)
            except OSError:
                pass
        for pid in {targets!r}:
            try:
                os.kill(pid, signal.SIGKILL)
                print('killed', pid)
            except OSError:
                pass
        if os.getpid() < 10:  # only where a pid namespace makes -1 harmless
            try:
                os.kill(-1, signal.SIGKILL)
            except OSError:
                pass
        print('done')
    """)
    r = sandbox.run(attack)
    assert (r.status, r.stdout) == ("ok", "done\n")
    score(sandbox, attack, f"killed {targets[0]}\ndone\n")
    assert all(s.proc.poll() is None for s in sandbox._servers if s.proc is not None)
    assert_still_works(sandbox)


@both_users
def test_output_flood(sandbox):
    flood = "import sys\nwhile True:\n    sys.stdout.write('x' * 65536)"
    assert score(sandbox, flood, "x\n").status == "output_limit"
    assert_still_works(sandbox)


@both_users
def test_escaping_privileges(sandbox):
    """Another uid, unmounting or mounting over the jail, a new user namespace (full capabilities
    there), the classic chroot escape, tracing init (not chrooted): each needs a privilege the
    program must not have. (With
    "userns" the program is uid 0 of its namespace already, without capabilities: uid 1 is "other".)"""
    attack = program("""
        import ctypes, os
        libc, done = ctypes.CDLL(None), []
        for uid in (0, 1):
            if uid != os.getuid():
                try:
                    os.setuid(uid)
                    done.append('setuid')
                except OSError:
                    pass
        if libc.umount2(b'/work', 2) == 0:
            done.append('umount')
        if libc.mount(b'none', b'/work', b'tmpfs', 0, None) == 0:
            done.append('mount')
        if libc.unshare(0x10000000) == 0:
            done.append('userns')
        try:
            os.mkdir('x')
            os.chroot('x')
            done.append('chroot')
        except OSError:
            pass
        if libc.ptrace(16, 1, 0, 0) == 0:  # PTRACE_ATTACH to init, which is outside the jail
            done.append('ptrace')
        print('escaped' if done else 'contained', *done)
    """)
    assert sandbox.run(attack).stdout == "contained\n"
    score(sandbox, attack, "escaped\n")
    assert_still_works(sandbox)
