"""The reward registry: the record picks the verifier; rewards are keyed by sample id; errors stay local."""

import pytest

import k15.rewards.registry as registry_module
from k15.data.prompts import PromptRecord
from k15.errors import DataError, K15Error
from k15.rewards.code import CodeConfig
from k15.rewards.math import MathConfig
from k15.rewards.registry import RewardConfig, RewardRegistry
from tests.rewards_helpers import sandbox  # noqa: F401

ARITH = PromptRecord("a", "7-2+4=", "9", 2, "arithmetic")
MATH = PromptRecord("m", "what is half of one?", "\\frac{1}{2}", 1, "math")
TESTS = ({"input": "1 2\n", "output": "3\n"}, {"input": "2 2\n", "output": "4\n"})
CODE = PromptRecord("c", "add two numbers", "print(3)", 1, "code", tests=TESTS)
ADD = "<answer>```python\na, b = map(int, input().split())\nprint(a + b)\n```</answer>"


@pytest.fixture()
def registry(sandbox):
    with RewardRegistry(sandbox=sandbox) as reg:
        yield reg


def test_each_domain_gets_its_verifier(registry):
    verdicts = registry.score([
        ("s1", "<answer>9</answer>", ARITH),
        ("s2", "<answer>0.5</answer>", MATH),  # equivalent: right only for the math verifier
        ("s3", "<answer>0.5</answer>", PromptRecord("r", "half?", "\\frac{1}{2}", 1, "arithmetic")),
        ("s4", ADD, CODE),
        ("s5", "<answer>print(3)</answer>", CODE),  # right on one test only
    ])
    assert {sid: (v.reward, v.reason) for sid, v in verdicts.items()} == {
        "s1": (1.0, "ok"), "s2": (1.0, "ok"), "s3": (0.0, "wrong"), "s4": (1.0, "ok"), "s5": (0.0, "wrong_answer"),
    }
    assert registry.counts == {"rule/ok": 1, "math/ok": 1, "rule/wrong": 1, "code/ok": 1, "code/wrong_answer": 1}


def test_partial_credit_from_the_config(sandbox):
    cfg = RewardConfig(code=CodeConfig(partial_credit=True))
    with RewardRegistry.from_config(cfg, sandbox=sandbox) as reg:
        verdict = reg.score([("s", "<answer>print(3)</answer>", CODE)])["s"]
    assert (verdict.reward, verdict.reason) == (0.5, "wrong_answer")


def test_verifier_field_overrides_the_domain(registry):
    record = PromptRecord("x", "half?", "\\frac{1}{2}", 1, "general", extra={"verifier": "math"})
    assert registry.score([("s", "<answer>0.5</answer>", record)])["s"].reward == 1.0


def test_a_prompt_sets_answer_format_wins_over_the_config():
    boxed = PromptRecord("b", "half?", "\\frac{1}{2}", 1, "math", extra={"answer_format": "boxed"})
    tagged = PromptRecord("t", "half?", "\\frac{1}{2}", 1, "math", extra={"answer_format": "answer_tag"})
    response = "Half of one is \\boxed{0.5}."
    with RewardRegistry(math=MathConfig(answer_format="answer_tag")) as reg:
        verdicts = reg.score([("s1", response, boxed), ("s2", response, MATH), ("s3", response, tagged)])
    assert {sid: v.reason for sid, v in verdicts.items()} == {"s1": "ok", "s2": "missing", "s3": "missing"}
    with RewardRegistry() as reg:  # the config's default: auto
        verdicts = reg.score([("s1", response, MATH), ("s2", response, tagged)])
    assert {sid: v.reason for sid, v in verdicts.items()} == {"s1": "ok", "s2": "missing"}


def test_an_unknown_answer_format_fails_early_naming_the_prompt(registry):
    odd = PromptRecord("q", "half?", "\\frac{1}{2}", 1, "math", extra={"answer_format": "latex"})
    with pytest.raises(DataError, match="prompt q: unknown answer_format 'latex' \\(known: auto, answer_tag, boxed"):
        registry.check([odd])
    registry.check([MATH, PromptRecord("g", "?", "1", 1, "math", extra={"answer_format": "gsm8k"})])
    assert registry.score([("s", "#### 1", odd)])["s"].reason == "verifier_error"


def test_a_failing_verifier_touches_only_its_sample(registry, monkeypatch, caplog):
    real = registry_module.verify_math

    def flaky(response, gold, cfg, answer_format=None):
        if "boom" in response:
            raise RuntimeError("sympy exploded")
        return real(response, gold, cfg, answer_format)

    monkeypatch.setattr(registry_module, "verify_math", flaky)
    items = [(f"s{i}", "<answer>boom</answer>" if i == 2 else "<answer>1/2</answer>", MATH) for i in range(5)]
    items.insert(3, ("t", "<answer>9</answer>", ARITH))
    verdicts = registry.score(items)
    assert verdicts["s2"] == (0.0, "verifier_error", None)
    assert all(verdicts[f"s{i}"].reward == 1.0 for i in (0, 1, 3, 4)) and verdicts["t"].reward == 1.0
    assert registry.counts["math/verifier_error"] == 1
    assert "sample s2" in caplog.text and "sympy exploded" in caplog.text


def test_sandbox_failure_is_a_verifier_error_for_that_sample(registry, monkeypatch):
    real_submit = registry.sandbox.submit

    def submit(program, stdin=""):
        if "boom" in program:
            raise registry_module.K15Error("sandbox down")
        return real_submit(program, stdin)

    monkeypatch.setattr(registry.sandbox, "submit", submit)
    verdicts = registry.score([("bad", "<answer>print('boom')</answer>", CODE), ("good", ADD, CODE)])
    assert verdicts["bad"].reason == "verifier_error" and verdicts["good"].reward == 1.0


def test_unknown_verifier_and_bad_tests(registry):
    odd = PromptRecord("o", "?", "1", 1, "chemistry")
    assert registry.score([("s", "<answer>1</answer>", odd)])["s"].reason == "verifier_error"
    with pytest.raises(DataError, match="prompt o: no verifier for 'chemistry'"):
        registry.check([odd])
    with pytest.raises(DataError, match="prompt n: 'tests' must be a non-empty list"):
        registry.check([PromptRecord("n", "?", "1", 1, "code")])


def test_repeated_sample_ids_are_refused(registry):
    with pytest.raises(K15Error, match="unique"):
        registry.score([("s", "<answer>9</answer>", ARITH), ("s", "<answer>8</answer>", ARITH)])


def test_no_sandbox_is_started_without_code_samples():
    with RewardRegistry() as reg:
        reg.score([("s", "<answer>9</answer>", ARITH)])
        assert reg._sandbox is None
