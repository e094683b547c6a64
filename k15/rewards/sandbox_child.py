"""The sandbox server: one per pool slot, started as `python -S -s -B sandbox_child.py SETUP_HEX`.

It is a separate process, not a `preexec_fn`, because forking a multi-threaded trainer and running
Python between fork and exec can deadlock; the server is single-threaded. Standard library only,
and nothing of the trainer's: its environment is only PYTHONHASHSEED=0, which the programs inherit.

Isolation "namespaces" (root). Once per slot, the server enters a new network namespace (only a
loopback that is down: no network at all) and a new mount namespace, where it builds the jail: a
read-only tmpfs root holding only the interpreter, the system libraries, a few devices and /work.
(Creating and destroying those two namespaces costs milliseconds and serializes in the kernel;
nothing of an execution outlives it in them, so a slot reuses them.) Then, per execution, it forks:
    launcher   stdin/stdout/stderr to the execution's files; new pid, ipc and uts namespaces; a
               fresh tmpfs on /work (a disk quota; gone with the execution) holding main.py;
               enforces the wall time.
    init       pid 1 of the new pid namespace: when it exits, the kernel kills every process left in
               the namespace (a fork bomb, a setsid'd daemon). It dies with the launcher (PDEATHSIG).
    program    pid 2: rlimits, chroot into the jail, the slot's own unprivileged uid (userns: no
               capabilities instead), no new privileges; then main.py runs in this very process, a
               fork of the server's clean interpreter (run_program), or with `fresh_interpreter` in
               an exec'd `python -S`.
Isolation "userns" (any user, where unprivileged user namespaces are allowed): the same, except
that the server first enters a user namespace of its own that maps only the caller's uid and gid
(to 0 inside); there it may make the other namespaces and mounts. No other uid exists in it, so the
program keeps uid 0 of that namespace but loses every capability (bounding set included, so an
exec cannot give them back): it is then an ordinary user of a namespace whose mounts, network and
pids it cannot change, and the kernel refuses a new user namespace to a chrooted process. Its
processes count against RLIMIT_NPROC per user namespace (Linux >= 5.14), i.e. per slot: the
server, launcher and init are the only other processes there. Its init has the program's uid, so
init handles no signal (the kernel then drops those the program sends it).
Isolation "rlimits" (any user): rlimits, the private directory, our environment and Python audit
hooks that refuse sockets, new processes and signals; weaker, see k15/rewards/sandbox.py.

The jail holds what the server's own interpreter needs (runtime_binds): it may differ from the
trainer's (rewards.sandbox.python).

Messages are a 4-byte length + marshal data (marshal is built in: nothing to import). The outcome of
an execution goes to a report pipe, never through the program's stdout/stderr.
"""

import sys

del sys.path[0]  # this script's directory (k15/rewards) holds math.py: it must not shadow the stdlib

import atexit  # noqa: E402 -- the imports the programs' processes inherit (see run_program)
import builtins  # noqa: E402
import ctypes  # noqa: E402
import marshal  # noqa: E402
import os  # noqa: E402
import resource  # noqa: E402
import select  # noqa: E402
import signal  # noqa: E402
import types  # noqa: E402

MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_REMOUNT, MS_BIND, MS_REC = 1, 2, 4, 8, 32, 4096, 16384
MS_NOATIME, MS_NODIRATIME, MS_PRIVATE, MS_RELATIME = 1024, 2048, 1 << 18, 1 << 21
MNT_DETACH = 2
CLONE_NEWNS, CLONE_NEWUTS, CLONE_NEWIPC, CLONE_NEWUSER = 0x20000, 0x4000000, 0x8000000, 0x10000000
CLONE_NEWPID, CLONE_NEWNET = 0x20000000, 0x40000000
PR_SET_PDEATHSIG, PR_CAPBSET_DROP, PR_SET_NO_NEW_PRIVS = 1, 24, 38
CAPABILITY_VERSION_3, LAST_CAP = 0x20080522, 63  # capabilities above the kernel's last one are skipped
SIGKILL = 9
DEVICES = ("null", "zero", "random", "urandom")
JAILED = ("namespaces", "userns")
OWN_PROCESSES = 3  # userns: server, launcher and init share the program's RLIMIT_NPROC count
# A bind mount made in a user namespace must keep these flags of the mount it copies (the kernel locks them).
LOCKED_FLAGS = {os.ST_RDONLY: MS_RDONLY, os.ST_NOSUID: MS_NOSUID, os.ST_NODEV: MS_NODEV, os.ST_NOEXEC: MS_NOEXEC,
                os.ST_NOATIME: MS_NOATIME, os.ST_NODIRATIME: MS_NODIRATIME, os.ST_RELATIME: MS_RELATIME}

# fresh_interpreter: runs main.py as __main__; `exit()` / `quit()` exist even without `site` (-S).
BOOTSTRAP = """\
import builtins, sys, types
builtins.exit = builtins.quit = sys.exit
if {guard}:
    def _refuse(event, args, blocked={blocked!r}):
        if event in blocked:
            raise PermissionError("sandbox: " + event + " is not allowed")
    sys.addaudithook(_refuse)
sys.argv, _main = ["main.py"], types.ModuleType("__main__")
_main.__file__, _main.__builtins__, sys.modules["__main__"] = "main.py", builtins, _main
exec(compile(open("main.py", "rb").read(), "main.py", "exec"), _main.__dict__)
"""
BLOCKED_EVENTS = (
    "socket.__new__", "socket.connect", "socket.bind", "os.fork", "os.forkpty", "os.system", "os.posix_spawn",
    "os.exec", "os.spawn", "subprocess.Popen", "os.kill", "os.killpg", "signal.pthread_kill", "ctypes.dlopen",
)

libc = ctypes.CDLL(None, use_errno=True)


class CapHeader(ctypes.Structure):  # capset(2)'s arguments
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]


def check(result: int, what: str) -> None:
    if result != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def mount(source, target, fstype, flags, data=None) -> None:
    enc = lambda s: None if s is None else s.encode()
    check(libc.mount(enc(source), enc(target), enc(fstype), ctypes.c_ulong(flags), enc(data)), f"mount {target}")


def bind(source: str, target: str, writable: bool = False, devices: bool = False) -> None:
    # Not recursive: the read-only remount below applies to this mount only, so a mount below `source`
    # (a writable /usr/local, a setuid-able NFS prefix) would keep its own flags: leave submounts out.
    mount(source, target, None, MS_BIND)
    copied = os.statvfs(target).f_flag
    flags = MS_REMOUNT | MS_BIND | MS_NOSUID | (0 if writable else MS_RDONLY) | (0 if devices else MS_NODEV)
    flags |= sum(ms for st, ms in LOCKED_FLAGS.items() if copied & st)
    mount(None, target, None, flags)


def runtime_binds() -> list:
    """What the program's root needs: this interpreter, its prefix and the system libraries."""
    paths = ["/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc/ld.so.cache",
             os.path.realpath(sys.base_prefix), os.path.dirname(os.path.realpath(sys.executable))]
    out = []
    for p in paths:  # skip missing paths and those already under a bound directory
        covered = any(p == q or p.startswith(q.rstrip("/") + "/") for q in out if not os.path.islink(q))
        if os.path.lexists(p) and not covered:
            out.append(p)
    return out


def enter_user_namespace() -> None:
    """A user namespace where our uid and gid are 0 and nothing else is mapped, with mount and
    network namespaces it owns. setgroups must be denied before an unprivileged gid_map write."""
    uid, gid = os.geteuid(), os.getegid()
    check(libc.unshare(CLONE_NEWUSER | CLONE_NEWNS | CLONE_NEWNET), "unshare(user)")
    for name, text in (("setgroups", "deny"), ("uid_map", f"0 {uid} 1"), ("gid_map", f"0 {gid} 1")):
        with open(f"/proc/self/{name}", "w") as f:
            f.write(text)


def drop_capabilities() -> None:
    """userns: the program is uid 0 of its namespace with every capability there; take them all,
    the bounding set first, so that no exec (of a root-owned binary, as uid 0) returns them."""
    for cap in range(LAST_CAP + 1):
        if libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0 and ctypes.get_errno() != 22:  # EINVAL: no such cap
            check(-1, "prctl(capbset_drop)")
    check(libc.capset(ctypes.byref(CapHeader(CAPABILITY_VERSION_3, 0)), (CapData * 2)()), "capset")  # all zero


def build_jail(root: str, binds: list) -> None:
    """In the slot's own mount namespace: a read-only tmpfs root with the runtime bound in."""
    mount(None, "/", None, MS_REC | MS_PRIVATE)  # nothing we mount propagates back to the host
    mount("tmpfs", root, "tmpfs", MS_NOSUID | MS_NODEV, "size=64k,mode=755")
    for path in binds:
        inner = root + path
        if os.path.islink(path):
            os.makedirs(os.path.dirname(inner), exist_ok=True)
            os.symlink(os.readlink(path), inner)
        elif os.path.isdir(path):
            os.makedirs(inner, exist_ok=True)
            bind(path, inner)
        elif os.path.isfile(path):
            os.makedirs(os.path.dirname(inner), exist_ok=True)
            open(inner, "w").close()
            bind(path, inner)
    os.makedirs(root + "/dev", exist_ok=True)
    for name in DEVICES:
        open(f"{root}/dev/{name}", "w").close()
        bind(f"/dev/{name}", f"{root}/dev/{name}", writable=True, devices=True)
    os.makedirs(root + "/work", exist_ok=True)
    mount(None, root, None, MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV)


def unmount_work(root: str) -> None:
    """Detach whatever an earlier execution left mounted on /work."""
    while libc.umount2((root + "/work").encode(), MNT_DETACH) == 0:
        pass


def set_limits(cfg: dict) -> None:
    cpu = cfg["cpu_seconds"]
    limits = {
        resource.RLIMIT_CORE: 0,
        resource.RLIMIT_CPU: (cpu, cpu + 1),  # SIGXCPU at the soft limit, SIGKILL one second later
        resource.RLIMIT_AS: cfg["memory_bytes"],
        resource.RLIMIT_FSIZE: cfg["max_output_bytes"],  # stdout/stderr are files: this caps them too
        resource.RLIMIT_NOFILE: cfg["max_open_files"],
    }
    if cfg["uid"] is not None:  # per-user count: meaningful only under a uid of our own
        limits[resource.RLIMIT_NPROC] = cfg["max_processes"]
    elif cfg["isolation"] == "userns":  # counted per user namespace, where our own processes are too
        limits[resource.RLIMIT_NPROC] = cfg["max_processes"] + OWN_PROCESSES
    for kind, value in limits.items():
        resource.setrlimit(kind, value if isinstance(value, tuple) else (value, value))


def report(fd: int, payload: dict) -> None:
    os.write(fd, marshal.dumps(payload))


def refuse(event: str, args: tuple) -> None:
    if event in BLOCKED_EVENTS:
        raise PermissionError(f"sandbox: {event} is not allowed")


def exit_code(exc: SystemExit) -> int:
    """What the interpreter would exit with on `sys.exit(exc.code)`."""
    if exc.code is None or isinstance(exc.code, int):
        return exc.code or 0
    print(exc.code, file=sys.stderr)
    return 1


def run_program(guard: bool) -> None:
    """Run ./main.py as __main__ in this (forked, jailed, unprivileged) process, then exit as a
    fresh interpreter would: join threads, run atexit handlers, flush, exit status. Never returns.

    A fork of the server is a clean interpreter that never ran untrusted code, and starts in a
    fraction of the time of `python -S` (no exec, no start-up imports)."""
    sys.stdin = sys.__stdin__ = open(0, encoding="utf-8", errors="surrogateescape", closefd=False)
    sys.stdout = sys.__stdout__ = open(1, "w", encoding="utf-8", errors="surrogateescape", closefd=False)
    sys.stderr = sys.__stderr__ = open(2, "w", encoding="utf-8", errors="backslashreplace", closefd=False,
                                       buffering=1)
    main = types.ModuleType("__main__")
    main.__file__, main.__builtins__ = "main.py", builtins
    sys.modules["__main__"], sys.argv = main, ["main.py"]
    builtins.exit = builtins.quit = sys.exit
    if guard:
        sys.addaudithook(refuse)
    code = 0
    try:
        with open("main.py", "rb") as f:
            source = f.read()
        exec(compile(source, "main.py", "exec"), main.__dict__)
    except SystemExit as exc:
        code = exit_code(exc)
    except BaseException as exc:  # noqa: BLE001 -- what the interpreter prints for an uncaught exception
        import traceback

        traceback.print_exception(type(exc), exc, exc.__traceback__.tb_next)  # without this frame
        code = 1
    try:
        if "threading" in sys.modules:
            sys.modules["threading"]._shutdown()  # wait for non-daemon threads, like interpreter exit
        atexit._run_exitfuncs()
        sys.stdout.flush()
        sys.stderr.flush()
    except SystemExit as exc:
        code = exit_code(exc)
    except BaseException:  # noqa: BLE001 -- e.g. flushing past the output limit
        code = code or 120  # the interpreter's status when flushing stdout fails at exit
    os._exit(code)


KEYCTL = {"x86_64": 250, "aarch64": 219}.get(os.uname().machine)  # the keyctl syscall (libc has no wrapper)
KEYCTL_JOIN_SESSION_KEYRING = 1


def leave_session_keyring() -> None:
    """A new, empty session keyring: the trainer's (Kerberos / AFS tokens on a cluster) stays out of reach."""
    if KEYCTL is None:
        raise OSError(f"no keyctl syscall number for {os.uname().machine}: cannot leave the session keyring")
    if libc.syscall(KEYCTL, KEYCTL_JOIN_SESSION_KEYRING, None) < 0:  # success: the new keyring's serial
        check(-1, "keyctl(join_session_keyring)")


def become_program(cfg: dict, report_fd: int) -> None:
    """In the forked child: limits, jail, drop privileges, then run the program. Never returns.

    A failure before the program starts is reported on the report fd; the program itself cannot
    reach that fd (closed before it runs; close-on-exec for a fresh interpreter)."""
    try:
        max_fd = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        os.setsid()
        if cfg["isolation"] in JAILED:
            os.chroot(cfg["root"])
            os.chdir("/work")
        else:
            os.chdir(cfg["workdir"])
        if cfg["uid"] is not None:
            os.setgroups([])
            os.setgid(cfg["uid"])
            os.setuid(cfg["uid"])
        check(libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "prctl(no_new_privs)")
        leave_session_keyring()
        set_limits(cfg)
        if cfg["isolation"] == "userns":
            drop_capabilities()
        guard = cfg["isolation"] not in JAILED
        if cfg["fresh_interpreter"]:
            code = BOOTSTRAP.format(guard=guard, blocked=BLOCKED_EVENTS if guard else ())
            os.execve(cfg["python"], [cfg["python"], "-S", "-s", "-B", "-c", code], cfg["env"])
        os.environ.clear()
        os.environ.update(cfg["env"])
        os.closerange(3, max_fd)  # the report and control pipes: not for the program
    except BaseException as exc:
        report(report_fd, {"error": f"cannot start the program: {exc}"})
        os._exit(127)
    run_program(guard)


def wait_status(pid: int) -> dict:
    _, status, usage = os.wait4(pid, 0)
    out = {"cpu_seconds": round(usage.ru_utime + usage.ru_stime, 4), "max_rss_kb": usage.ru_maxrss}
    if os.WIFSIGNALED(status):
        out["signal"] = os.WTERMSIG(status)
    else:
        out["exit_code"] = os.WEXITSTATUS(status)
    return out


def run_init(cfg: dict, report_fd: int, launcher_alive: int) -> None:
    """pid 1 of the namespace: run the program as pid 2 and report how it ended.

    The kernel drops every signal sent to a namespace's init from inside unless init handles it, and
    with "userns" the program has init's uid: so no handler here (Python's own is SIGINT's)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    check(libc.prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0), "prctl(pdeathsig)")
    if select.select([launcher_alive], [], [], 0)[0]:  # the launcher died before pdeathsig was armed
        os._exit(1)
    pid = os.fork()
    if pid == 0:
        become_program(cfg, report_fd)
    report(report_fd, wait_status(pid))
    os._exit(0)  # the kernel now kills whatever the program left behind in the namespace


def wait_with_deadline(pid: int, seconds: float) -> bool:
    """True when `pid` exited within `seconds`; otherwise it is killed (not reaped) and False."""
    pidfd = os.pidfd_open(pid)
    exited = bool(select.select([pidfd], [], [], seconds)[0])
    os.close(pidfd)
    if not exited:
        os.kill(pid, SIGKILL)
    return exited


def kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, SIGKILL)
    except ProcessLookupError:
        pass


def launch(cfg: dict, report_fd: int) -> None:
    """One execution (in a fresh fork of the server): isolate, start init/program, enforce the wall time."""
    jailed = cfg["isolation"] in JAILED
    if jailed:
        check(libc.unshare(CLONE_NEWPID | CLONE_NEWIPC | CLONE_NEWUTS), "unshare")
        work = cfg["root"] + "/work"
        options = f"size={cfg['disk_bytes']},nr_inodes={cfg['max_files']},mode=700"
        if cfg["uid"] is not None:  # the slot's uid (userns: uid 0 of the namespace, the mounter, is the program's)
            options += f",uid={cfg['uid']},gid={cfg['uid']}"
        mount("tmpfs", work, "tmpfs", MS_NOSUID | MS_NODEV, options)
        with open(work + "/main.py", "w", encoding="utf-8") as f:
            f.write(cfg["program"])
    alive_r, alive_w = os.pipe()  # readable (EOF) in the child once the launcher is gone
    pid = os.fork()
    if pid == 0:
        os.close(alive_w)
        if jailed:
            run_init(cfg, report_fd, alive_r)
        become_program(cfg, report_fd)
    os.close(alive_r)
    if wait_with_deadline(pid, cfg["wall_seconds"]):
        if jailed:
            os.waitpid(pid, 0)
        else:
            report(report_fd, wait_status(pid))
            kill_group(pid)  # leftovers of the program's session (weak: a setsid escapes this)
    else:
        kill_group(pid)
        os.waitpid(pid, 0)  # for init this returns once every process of the namespace is gone
        report(report_fd, {"wall_timeout": True})
    if jailed:
        unmount_work(cfg["root"])


def redirect(cfg: dict) -> None:
    """stdin/stdout/stderr from/to the execution's files; this also drops the server's request pipes."""
    for fd, (path, flags) in enumerate([(cfg["stdin"], os.O_RDONLY), (cfg["stdout"], os.O_WRONLY | os.O_TRUNC),
                                        (cfg["stderr"], os.O_WRONLY | os.O_TRUNC)]):
        opened = os.open(path, flags)
        os.dup2(opened, fd)
        os.close(opened)


def execute(cfg: dict) -> bytes:
    if cfg["isolation"] in JAILED:
        unmount_work(cfg["root"])  # in case a launcher died before its own clean-up
    report_r, report_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(report_r)
            redirect(cfg)
            launch(cfg, report_w)
        except BaseException as exc:
            report(report_w, {"error": f"{type(exc).__name__}: {exc}"})
        os._exit(0)
    os.close(report_w)
    os.waitpid(pid, 0)
    chunks = []
    while chunk := os.read(report_r, 65536):  # every writer has exited: this ends
        chunks.append(chunk)
    os.close(report_r)
    return b"".join(chunks)


def read_exact(fd: int, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = os.read(fd, n - len(data))
        if not chunk:
            return b""
        data += chunk
    return data


def send(payload: bytes) -> None:
    os.write(1, len(payload).to_bytes(4, "little") + payload)


def main() -> None:
    """Set the slot up, say so, then serve executions: requests on stdin, replies on stdout."""
    check(libc.prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0), "prctl(pdeathsig)")  # exit with the trainer
    setup = marshal.loads(bytes.fromhex(sys.argv[1]))
    try:
        if setup["isolation"] == "userns":
            enter_user_namespace()
        elif setup["isolation"] == "namespaces":
            check(libc.unshare(CLONE_NEWNS | CLONE_NEWNET), "unshare")
        if setup["isolation"] in JAILED:
            build_jail(setup["root"], runtime_binds())
    except OSError as exc:
        why = f"{exc.strerror}: {exc.filename}" if exc.filename else exc.strerror or str(exc)
        send(marshal.dumps({"error": why, "errno": exc.errno}))  # e.g. "unshare(user): Operation not permitted"
        return
    send(marshal.dumps({"ready": True}))
    while header := read_exact(0, 4):
        send(execute(marshal.loads(read_exact(0, int.from_bytes(header, "little")))))


if __name__ == "__main__":
    main()
