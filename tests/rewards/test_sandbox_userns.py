"""The sandbox without root: isolation "userns", the programs' interpreter, and the refusal.

As root, each test body runs in a fork that dropped root's privileges (tests/rewards/unprivileged.py).
"No user namespaces" is made real, not mocked: the kernel refuses them to a chrooted process.
"""

import contextlib
import io
import json
import os
import shutil
import sys
import tempfile
import time
import uuid

import pytest

from k15.errors import ConfigError
from k15.rewards import sandbox as sandbox_module
from k15.rewards.__main__ import main as rewards_cli
from k15.rewards.sandbox import Sandbox, SandboxError, SandboxLimits, sandbox_python
from tests.rewards.unprivileged import SYSTEM_PYTHON, as_user, user_sandbox, without_user_namespaces
from tests.rewards_helpers import FAST

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="drops root's privileges to act as another user")


def test_auto_picks_user_namespaces_when_not_root():
    def body():
        with user_sandbox() as sb:
            r = sb.run("import os\nprint(os.getuid(), os.getpid(), sorted(os.listdir('/')))")
            return sb.isolation, sb.python, r.stdout, sb.run("import socket\nprint(socket.if_nameindex())").stdout

    isolation, python, out, interfaces = as_user(body)
    uid, pid, root = out.split(" ", 2)
    assert (isolation, python) == ("userns", SYSTEM_PYTHON)
    assert interfaces == "[(1, 'lo')]\n"  # a network namespace of its own: a loopback (down), nothing else
    assert (uid, pid) == ("0", "2")  # uid 0 of its own user namespace (without capabilities); init is pid 1
    assert "'work'" in root and not {"'proc'", "'home'", "'root'", "'tmp'"} & set(root.strip("[]\n").split(", "))


JOBS = [
    ("n = int(input())\nprint(sum(map(int, input().split())) * n)", "2\n1 2 3\n"),
    ("import sys\nprint(list({'apple', 'banana', 'cherry'}))\nsys.exit(3)", ""),  # hash seed 0 everywhere
    ("open('scratch', 'w').write('x')\nimport os\nprint(sorted(os.listdir('.')))", ""),
]


def outcomes(fresh: bool) -> tuple[str, list]:
    with user_sandbox(fresh_interpreter=fresh) as sb:
        return sb.isolation, [(r.status, r.stdout, r.exit_code) for r in sb.run_many(JOBS)]


@pytest.mark.parametrize("fresh", [False, True], ids=["forked", "fresh_interpreter"])
def test_programs_behave_the_same_as_root_and_unprivileged(fresh):
    isolation, results = as_user(outcomes, fresh)
    assert isolation == "userns"
    assert results[0] == ("ok", "12\n", 0) and results[1][0::2] == ("runtime_error", 3)
    assert results[2] == ("ok", "['main.py', 'scratch']\n", 0)
    if os.geteuid() == 0:
        assert outcomes(fresh) == ("namespaces", results)  # the same interpreter gives the same outputs


def test_the_interpreter_setting():
    ours = getattr(sys, "_base_executable", None) or sys.executable
    assert sandbox_python("") == ours and sandbox_python(SYSTEM_PYTHON) == SYSTEM_PYTHON
    with pytest.raises(ConfigError, match="absolute path"):
        SandboxLimits(python="python3")


@needs_root
def test_a_user_who_may_not_execute_our_interpreter_gets_the_system_one():
    ours = getattr(sys, "_base_executable", None) or sys.executable

    def body():
        if os.access(ours, os.X_OK):
            return None
        with pytest.raises(SandboxError, match="not an interpreter this user can execute"):
            sandbox_python(ours)
        return sandbox_python("")

    chosen = as_user(body)
    if chosen is None:
        pytest.skip(f"any user may execute {ours} here")
    assert chosen == shutil.which("python3", path="/usr/local/bin:/usr/bin:/bin")


def refused(**limits) -> tuple[str, float, list]:
    """The refusal's message, how long a second attempt took, and what this process remembers."""
    messages, seconds = [], []
    for _ in range(2):
        start = time.perf_counter()
        with pytest.raises(SandboxError) as info:
            user_sandbox(**limits)
        seconds.append(time.perf_counter() - start)
        messages.append(str(info.value))
    assert messages[0] == messages[1]
    return messages[0], seconds[1], list(sandbox_module._UNAVAILABLE)


@needs_root
def test_without_user_namespaces_it_refuses_in_one_line(tmp_path):
    message, again, remembered = as_user(refused, before_drop=lambda: without_user_namespaces(str(tmp_path)))
    assert message.startswith("sandbox: refusing to run untrusted code without isolation (userns: ")
    assert "Operation not permitted" in message and "rewards.sandbox.allow_weak=true" in message
    assert "\n" not in message
    assert [key[0] for key in remembered] == ["userns"]  # probed once: the second attempt starts no server
    assert again < 0.2, f"{again:.3f} s for a remembered refusal"


@needs_root
def test_the_weak_fallback_runs_only_when_allowed(tmp_path):
    def body():
        with user_sandbox(allow_weak=True) as sb:
            return sb.isolation, sb.run("print(6 * 7)").stdout, sb.run("import socket\nsocket.socket()").stderr

    isolation, out, err = as_user(body, before_drop=lambda: without_user_namespaces(str(tmp_path)))
    assert (isolation, out) == ("rlimits", "42\n") and "socket.__new__ is not allowed" in err


@needs_root
def test_run_code_refuses_in_one_line_unless_allow_weak(tmp_path):
    def body():
        work = tempfile.mkdtemp()
        with open(f"{work}/p.py", "w") as f:
            f.write("print(sum(map(int, input().split())))")
        with open(f"{work}/t.json", "w") as f:
            json.dump([{"input": "1 2\n", "output": "3\n"}], f)
        out = []
        for extra in ([], ["--allow-weak"]):
            stdout, stderr = io.StringIO(), io.StringIO()
            with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
                code = rewards_cli(["run-code", "--program", f"{work}/p.py", "--tests", f"{work}/t.json", *extra])
            out.append((code, stdout.getvalue(), stderr.getvalue()))
        shutil.rmtree(work)
        return out

    (code, stdout, stderr), (weak_code, weak_stdout, _) = as_user(
        body, before_drop=lambda: without_user_namespaces(str(tmp_path)))
    assert (code, stdout) == (2, "") and stderr.count("\n") == 1
    assert stderr.startswith("error: sandbox: refusing to run untrusted code") and "--allow-weak" in stderr
    assert weak_code == 0 and json.loads(weak_stdout)["passed"] == 1


def test_run_code_as_a_user_contains_the_two_escapes_of_the_issue():
    """As an unprivileged user, `run-code` let a program delete the user's own files outside its
    directory and write a file in /tmp; both are contained now."""
    def body():
        home = tempfile.mkdtemp(prefix="k15-home-")  # the user's own files
        marker = f"/tmp/k15-escape-{uuid.uuid4().hex}"
        with open(f"{home}/notes.txt", "w") as f:
            f.write("keep me")
        attacks = {
            "delete": f"import shutil\nshutil.rmtree({home!r})\nprint('done')",
            "write": f"open({marker!r}, 'w').write('x')\nprint('done')",
        }
        verdicts = {}
        for name, source in attacks.items():
            with open(f"{home}/{name}.py", "w") as f:
                f.write(source)
            with open(f"{home}/{name}.json", "w") as f:
                json.dump([{"input": "", "output": "done\n"}], f)
        for name in attacks:
            stdout = io.StringIO()
            with contextlib.redirect_stdout(stdout):
                code = rewards_cli(["run-code", "--program", f"{home}/{name}.py", "--tests", f"{home}/{name}.json"])
            verdicts[name] = (code, json.loads(stdout.getvalue())["passed"])
        intact = open(f"{home}/notes.txt").read() == "keep me" and not os.path.exists(marker)
        shutil.rmtree(home)
        return verdicts, intact

    verdicts, intact = as_user(body)
    assert verdicts == {"delete": (0, 0), "write": (0, 0)} and intact


@needs_root
def test_userns_as_root_is_refused_for_the_process_limit():
    """As root a user namespace maps the program to the host's root, whom RLIMIT_NPROC does not limit (a
    fork bomb would meet only the wall time): root runs "namespaces", or nothing."""
    with pytest.raises(SandboxError, match=r"userns: not as root \(the program would be the host's root, exempt "
                                           r"from the process limit\); use namespaces"):
        Sandbox(SandboxLimits(**{**FAST, "isolation": "userns"}))
