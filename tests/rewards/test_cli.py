"""The two command-line checks print one JSON line each, as documented."""

import json
import subprocess
import sys

import pytest


def run(*args):
    proc = subprocess.run([sys.executable, "-m", "k15.rewards", *args], capture_output=True, text=True, timeout=120)
    return proc.returncode, proc.stdout, proc.stderr


def test_verify_math(tmp_path):
    response = tmp_path / "response.txt"
    response.write_text("<think>half of it</think><answer>\\boxed{0.5}</answer>")
    code, out, _ = run("verify-math", "--response", str(response), "--gold", "\\frac{1}{2}")
    assert code == 0 and json.loads(out) == {"correct": True, "reason": "ok", "answer": "0.5", "format": "answer_tag"}
    response.write_text("<answer>\\boxed{1} \\boxed{0.5}</answer>")
    code, out, _ = run("verify-math", "--response", str(response), "--gold", "\\frac{1}{2}")
    assert code == 0 and json.loads(out) == {
        "correct": False, "reason": "multiple", "answer": "\\boxed{1} \\boxed{0.5}", "format": "answer_tag"}


def test_verify_math_formats(tmp_path):
    response = tmp_path / "response.txt"
    response.write_text("<think>3 of 4, \\boxed{0.7}? no</think>\nSo the probability is \\boxed{\\frac{3}{4}}.")
    code, out, _ = run("verify-math", "--response", str(response), "--gold", "0.75")
    assert code == 0 and json.loads(out) == {"correct": True, "reason": "ok", "answer": "\\frac{3}{4}", "format": "boxed"}
    code, out, _ = run("verify-math", "--response", str(response), "--gold", "0.75", "--format", "gsm8k")
    assert code == 0 and json.loads(out) == {"correct": False, "reason": "missing", "answer": None, "format": "gsm8k"}
    code, _, err = run("verify-math", "--response", str(response), "--gold", "0.75", "--format", "latex")
    assert code == 2 and "invalid choice: 'latex'" in err


@pytest.mark.parametrize(
    "program, passed, status",
    [
        ("print(sum(map(int, input().split())))", 2, "ok"),
        ("print(3)", 1, "wrong_answer"),
        ("while True:\n    pass", 0, "timeout"),
    ],
)
def test_run_code(tmp_path, program, passed, status):
    (tmp_path / "p.py").write_text(program)
    (tmp_path / "t.json").write_text(json.dumps([{"input": "1 2\n", "output": "3\n"}, {"input": "2 2", "output": "4"}]))
    code, out, _ = run("run-code", "--program", str(tmp_path / "p.py"), "--tests", str(tmp_path / "t.json"),
                       "--cpu-seconds", "1", "--wall-seconds", "2")
    result = json.loads(out)
    assert code == 0 and (result["passed"], result["total"], result["status"]) == (passed, 2, status)
    assert set(result) == {"passed", "total", "status", "seconds"} and result["seconds"] > 0


def test_bad_input_is_one_line_and_exit_2(tmp_path):
    (tmp_path / "t.json").write_text("[{]")
    (tmp_path / "p.py").write_text("print(1)")
    code, out, err = run("run-code", "--program", str(tmp_path / "p.py"), "--tests", str(tmp_path / "t.json"))
    assert code == 2 and out == "" and err.startswith("error: ") and "not valid JSON" in err and err.count("\n") == 1
    code, _, err = run("verify-math", "--response", str(tmp_path / "missing.txt"), "--gold", "1")
    assert code == 2 and "cannot read the response file" in err
