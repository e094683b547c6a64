"""Code RL scores the same as root and as a normal user: RLModule.score on one batch of code samples.

The whole pipeline cannot run as another user here (the project's interpreter is under /root), so
the check is the RL step's reward path itself: RLModule.score with the registry built from the
`rewards` config section, as the RL stage builds it, in this process (root: isolation
"namespaces") and in a fork that dropped root's privileges (isolation "userns"). Where no isolation
is possible, every code sample is a verifier error (reward 0, counted), and the others are unaffected.
"""

import os
import uuid
from collections import Counter
from types import SimpleNamespace

import pytest
import torch

from k15.config import apply_overrides, base
from k15.data.prompts import PromptRecord
from k15.modules.rl import RLModule
from k15.rewards.registry import RewardRegistry
from k15.rl.batch import RolloutBatch, Sample
from tests.rewards.unprivileged import SYSTEM_PYTHON, as_user, without_user_namespaces

SANDBOX = [f"rewards.sandbox.python={SYSTEM_PYTHON}", "rewards.sandbox.workers=2", "rewards.sandbox.cpu_seconds=1",
           "rewards.sandbox.wall_seconds=1.5", "rewards.sandbox.memory_mb=256"]
TESTS = ({"input": "1 2\n", "output": "3\n"}, {"input": "5 5\n", "output": "10\n"})
SUM = PromptRecord("sum", "Print the sum of the two numbers.", "", 1, "code", tests=TESTS)
ARITH = PromptRecord("arith", "3+4=", "7", 1, "arithmetic")


def responses(canary: str) -> list[tuple[PromptRecord, str, str]]:
    """(prompt, response, finish reason): right, wrong, looping, hostile, malformed and cut programs."""
    answer = "<answer>\n```python\n{}\n```\n</answer>".format
    return [
        (SUM, answer("print(sum(map(int, input().split())))"), "stop"),
        (SUM, answer("print(3)"), "stop"),
        (SUM, answer("while True:\n    pass"), "stop"),
        (SUM, answer(f"import os\nos.remove({canary!r})\nprint(sum(map(int, input().split())))"), "stop"),
        (SUM, "print(sum(map(int, input().split())))", "stop"),  # no answer block
        (SUM, answer("print(sum(map(int, input().split())))")[:-9], "length"),
        (ARITH, "<answer>7</answer>", "stop"),
    ]


def score_batch() -> tuple[list[float], dict, dict, str, bool]:
    """One batch through RLModule.score, as the RL stage does it; the hostile sample attacks `canary`."""
    torch.set_num_threads(1)  # in a fork: no OpenMP pool inherited from the parent
    canary = f"/tmp/k15-rl-canary-{uuid.uuid4().hex}"
    with open(canary, "w") as f:
        f.write("keep me")
    cfg = apply_overrides(base(), SANDBOX)
    items = responses(canary)
    texts = [text for _, text, _ in items]
    samples = [Sample(f"{rec.id}@0.0#{j}", rec, [1], [j], [], reason) for j, (rec, _, reason) in enumerate(items)]
    chat = SimpleNamespace(response_text=lambda tok, ids: texts[ids[0]])
    batch = RolloutBatch(samples, torch.zeros(len(samples), dtype=torch.long), pad_id=0)
    with RewardRegistry.from_config(cfg.rewards) as registry:
        module = SimpleNamespace(cfg=cfg.rl, tok=None, verdicts=Counter(), _last_reasons={}, registry=registry,
                                 chat=chat)
        rewards, _ = RLModule.score(module, batch)
        isolation = registry._sandbox.isolation if registry._sandbox is not None else "refused"
    intact = open(canary).read() == "keep me"
    os.remove(canary)
    return rewards.tolist(), dict(module.verdicts), dict(registry.counts), isolation, intact


def test_code_rl_scores_the_same_as_root_and_as_a_normal_user():
    user = as_user(score_batch)
    rewards, verdicts, counts, isolation, intact = user
    assert isolation == "userns" and intact
    assert rewards == [1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0]
    assert verdicts == {"ok": 2, "wrong_answer": 1, "timeout": 1, "runtime_error": 1, "missing": 1, "truncated": 1}
    if os.geteuid() == 0:
        root = score_batch()
        assert root[3] == "namespaces" and root[:3] == user[:3] and root[4]


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to take user namespaces away from the fork")
def test_without_isolation_code_samples_are_verifier_errors(tmp_path):
    rewards, verdicts, counts, isolation, intact = as_user(
        score_batch, before_drop=lambda: without_user_namespaces(str(tmp_path)))
    assert isolation == "refused" and intact
    assert rewards == [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0]
    assert counts == {"code/verifier_error": 4, "code/missing": 2, "rule/ok": 1}  # the refusal, once per program
