"""RLModule.score: rewards keyed by sample id; cut and looping responses get their configured rewards."""

from collections import Counter
from types import SimpleNamespace

import torch

from k15.chat import RAW
from k15.config import RLConfig
from k15.data.prompts import PromptRecord
from k15.modules.rl import RLModule
from k15.rewards.registry import RewardRegistry
from k15.rl.batch import RolloutBatch, Sample
from k15.tokenizer import build_synthetic_tokenizer, encode


def test_truncated_and_repeat_stopped_responses_get_their_configured_rewards():
    tok = build_synthetic_tokenizer()
    cfg = RLConfig(truncated_reward=0.25)
    cfg.repeat.penalty = 0.5
    record = PromptRecord("p", "3+4=", "7", 1, "arithmetic")
    responses = [("<answer>7</answer>", "stop"), ("<answer>3</answer>", "stop"), ("<answer>7", "length"),
                 ("1+1=2,1+1=2,1+1=2", "repeat"), ("<answer>7</answer>", "length")]
    samples = [Sample(f"p@0.0#{j}", record, [1], encode(tok, text), [], reason) for j, (text, reason) in enumerate(responses)]
    module = SimpleNamespace(cfg=cfg, tok=tok, verdicts=Counter(), _last_reasons={}, registry=RewardRegistry(), chat=RAW)

    rewards, correct = RLModule.score(module, RolloutBatch(samples, torch.zeros(5, dtype=torch.long), pad_id=0))
    assert rewards.tolist() == [1.0, 0.0, 0.25, -0.5, 0.25]
    # Correctness (for the length penalty and the success rates) is the verifier's, for complete answers only.
    assert correct.tolist() == [True, False, False, False, False]
    assert module.verdicts == Counter({"ok": 1, "wrong": 1, "truncated": 2, "repeat": 1})


def test_math_and_arithmetic_prompts_are_scored_by_their_own_verifiers():
    """One batch, two domains: each sample gets its prompt's verifier, looked up by id."""
    tok = build_synthetic_tokenizer()
    arith = PromptRecord("a", "3+4=", "7", 1, "arithmetic")
    frac = PromptRecord("m", "1/2+1/4=", "3/4", 2, "math")
    texts = [(arith, "<answer>7</answer>"), (frac, "<answer>0.75</answer>"), (arith, "<answer>7.0</answer>"), (frac, "<answer>3/4</answer>")]
    samples = [Sample(f"s{j}", rec, [1], encode(tok, text), [], "stop") for j, (rec, text) in enumerate(texts)]
    module = SimpleNamespace(cfg=RLConfig(), tok=tok, verdicts=Counter(), _last_reasons={}, registry=RewardRegistry(), chat=RAW)
    rewards, _ = RLModule.score(module, RolloutBatch(samples, torch.tensor([0, 1, 0, 1]), pad_id=0))
    # math-verify accepts 0.75 for 3/4; the rule verifier of the arithmetic world wants exactly "7"
    assert rewards.tolist() == [1.0, 1.0, 0.0, 1.0]
    assert module._verifier_means == {"reward/rule_mean": 0.5, "reward/math_mean": 1.0}
