"""Test bodies as an unprivileged user, from a suite that runs as root.

The project's interpreter lives under /root, which another user may not even enter, so a test
cannot start a process of its own as that user. Instead `as_user` forks this process (everything is
already imported), and the fork drops root's privileges for good (no groups, real = effective =
saved ids) before it runs the body; the sandbox it starts then runs its servers and programs with
SYSTEM_PYTHON, which any user may execute. Each call gets a uid of its own, with no passwd entry,
so "no process of that uid is left, and no file of it in the temporary directory" is an exact census.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import os
import pickle
import random
import select
import signal
import tempfile
import time
import traceback

from k15.rewards.sandbox import Sandbox, SandboxLimits
from tests.rewards_helpers import FAST, processes_of, slot_uids

SYSTEM_PYTHON = "/usr/bin/python3"
USER_LIMITS = dict(FAST, python=SYSTEM_PYTHON)
UID_BASE = 2_000_000_000  # above the root sandbox's slot uids (uid_base 1e9 + 2**28)
PR_SET_PDEATHSIG = 1
CLONE_NEWNS, CLONE_NEWUSER, MS_BIND, MS_REC, MS_PRIVATE = 0x20000, 0x10000000, 4096, 16384, 1 << 18


def fresh_uid() -> int:
    return UID_BASE + random.SystemRandom().randrange(1 << 20)


def drop_privileges(uid: int) -> None:
    """Become `uid` (and gid) for good: groups first, while we may still change them."""
    os.setgroups([])
    os.setresgid(uid, uid, uid)
    os.setresuid(uid, uid, uid)


def as_user(fn, *args, timeout: float = 60.0, before_drop=None):
    """fn(*args) as an unprivileged user: in a dropped-privilege fork when we are root, else here.
    Returns fn's result; a failure there is raised here as an AssertionError with its traceback.
    `before_drop()` runs in the fork while it is still root (e.g. to take user namespaces away)."""
    import pytest

    if os.geteuid() != 0:
        if before_drop is not None:
            pytest.skip("needs root to prepare the unprivileged process")
        return fn(*args)
    if before_drop is None and not userns_allowed():  # e.g. a container whose seccomp profile forbids them
        pytest.skip("this machine does not let an unprivileged user create user namespaces")
    uid = fresh_uid()
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        _child(uid, read_end, write_end, fn, args, before_drop)
    os.close(write_end)
    try:
        data = _read_all(read_end, timeout, pid)
    finally:
        os.close(read_end)
        os.waitpid(pid, 0)
    _wait_until_gone(uid)
    status, value = pickle.loads(data)
    left = _files_of(uid)
    assert status == "error" or not left, f"uid {uid} left files behind: {left}"
    if status == "error":
        raise AssertionError(f"as uid {uid}:\n{value}")
    return value


@functools.cache
def userns_allowed() -> bool:
    """Whether an unprivileged process may create a user namespace here (probed once, in a fork)."""
    pid = os.fork()
    if pid == 0:
        try:
            drop_privileges(fresh_uid())
            ok = ctypes.CDLL(None, use_errno=True).unshare(CLONE_NEWUSER) == 0
        except BaseException:  # noqa: BLE001
            ok = False
        os._exit(0 if ok else 1)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status) == 0


def _child(uid: int, read_end: int, write_end: int, fn, args, before_drop) -> None:
    """Never returns into pytest: os._exit whatever happens."""
    try:
        os.close(read_end)
        ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)  # not outlive the test run
        if before_drop is not None:
            before_drop()
        drop_privileges(uid)
        payload = ("ok", fn(*args))
    except BaseException:  # noqa: BLE001 -- reported to the parent, which raises it
        payload = ("error", traceback.format_exc())
    try:
        data = pickle.dumps(payload)
    except Exception as exc:  # noqa: BLE001
        data = pickle.dumps(("error", f"unpicklable result: {exc}"))
    with contextlib.suppress(OSError):
        while data:
            data = data[os.write(write_end, data):]
    os._exit(0)


def _read_all(fd: int, timeout: float, pid: int) -> bytes:
    deadline, chunks = time.monotonic() + timeout, []
    while True:
        if not select.select([fd], [], [], max(0.0, deadline - time.monotonic()))[0]:
            os.kill(pid, signal.SIGKILL)
            raise AssertionError(f"the unprivileged test body took over {timeout} s")
        chunk = os.read(fd, 1 << 16)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


def _wait_until_gone(uid: int, seconds: float = 5.0) -> None:
    deadline = time.monotonic() + seconds
    while processes_of({uid}):
        assert time.monotonic() < deadline, f"processes of uid {uid} outlived the test: {processes_of({uid})}"
        time.sleep(0.02)


def without_user_namespaces(jail: str) -> None:
    """Make this process (still root) one that may not create user namespaces, as on a machine that
    disables them: the kernel refuses them to a chrooted process, so chroot into a private bind of
    the whole tree at `jail`, an empty directory (every path still works, but the process root is
    no longer its namespace's)."""
    libc = ctypes.CDLL(None, use_errno=True)
    for ok in (libc.unshare(CLONE_NEWNS) == 0,
               libc.mount(None, b"/", None, MS_REC | MS_PRIVATE, None) == 0,
               libc.mount(b"/", jail.encode(), None, MS_BIND | MS_REC, None) == 0):
        assert ok, os.strerror(ctypes.get_errno())
    os.chroot(jail)
    os.chdir("/")


def _files_of(uid: int) -> list[str]:
    """What the user left in the temporary directory (the sandbox's jails and work directories go there)."""
    found = []
    with os.scandir(tempfile.gettempdir()) as entries:
        for entry in entries:
            with contextlib.suppress(OSError):  # others' files come and go meanwhile
                if entry.stat(follow_symlinks=False).st_uid == uid:
                    found.append(entry.path)
    return found


def user_sandbox(**limits) -> Sandbox:
    return Sandbox(SandboxLimits(**{**USER_LIMITS, **limits}))


def leftovers(sb: Sandbox) -> list[int]:
    """Processes of the sandbox's programs still alive: of the slots' uids (namespaces), or (userns:
    the programs run under our own uid) of our uid in a pid namespace below ours."""
    if sb.isolation == "namespaces":
        return processes_of(slot_uids(sb))
    depth = _pid_depth("self")
    return [pid for pid in processes_of({os.getuid()}) if _pid_depth(pid) > depth]


def _pid_depth(pid) -> int:
    """How many pid namespaces deep a process is, seen from ours (0 once it is gone)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            return next((len(line.split()) - 1 for line in f if line.startswith("NSpid:")), 0)
    except OSError:
        return 0
