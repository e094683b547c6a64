"""Evaluation against hand-computed cases: pass@1 and unbiased pass@k per group, overall means, tokens, verdicts."""

import pytest

import k15.eval.evaluate as evaluate_module
from k15.config import EvalConfig
from k15.data.prompts import PromptRecord
from k15.eval.evaluate import EvalItem, evaluate_prompt_set, tally, unbiased_pass_at_k
from k15.tokenizer import build_synthetic_tokenizer, encode, load_tokenizer

TOK = build_synthetic_tokenizer()


@pytest.mark.parametrize("n, c, k, expected", [
    (4, 1, 1, 0.25), (4, 1, 2, 0.5), (4, 0, 3, 0.0), (4, 4, 2, 1.0), (5, 2, 3, 0.9), (8, 3, 1, 3 / 8),
])
def test_unbiased_pass_at_k_by_hand(n, c, k, expected):
    # 1 - C(n-c, k) / C(n, k): e.g. n=5, c=2, k=3: 1 - C(3,3)/C(5,3) = 1 - 1/10
    assert unbiased_pass_at_k(n, c, k) == pytest.approx(expected)


def responses(*texts):
    return [encode(TOK, t) for t in texts]


def test_tally_per_level_and_overall():
    # level 1: problem a right twice; level 2: problem b right once of 2, problem c never
    items = [EvalItem(1, "a", "5", "x"), EvalItem(1, "a", "5", "x"),
             EvalItem(2, "b", "3", "y"), EvalItem(2, "b", "3", "y"), EvalItem(2, "c", "7", "z"), EvalItem(2, "c", "7", "z")]
    out = responses("<answer>5</answer>", "<think>1:2+3=5</think><answer>5</answer>",
                    "<answer>3</answer>", "<answer>4</answer>", "<answer>1</answer>", "no answer")
    result = tally(items, out, TOK, pass_k=[1, 2])
    assert result.levels[1].pass_at_1 == 1.0 and result.levels[2].pass_at_1 == 0.25
    assert result.levels[2].pass_at_k[2] == pytest.approx((1.0 + 0.0) / 2)  # b: 1 - C(1,2)/C(2,2) = 1; c: 0
    assert result.levels[1].long_share == 0.5 and result.levels[2].problems == 2
    assert result.pass_at_1 == pytest.approx((1.0 + 0.25) / 2)  # macro: each level weighs the same
    lengths = [len(o) for o in out]
    assert result.mean_tokens == pytest.approx(sum(lengths) / 6)
    assert result.to_dict()["levels"]["2"] == {"pass@1": 0.25, "pass@2": 0.5, "mean_tokens": round(sum(lengths[2:]) / 4, 2),
                                               "long_share": 0.0, "samples": 4}
    micro = tally(items, out, TOK, pass_k=[1], macro=False)
    assert micro.pass_at_1 == pytest.approx((1.0 + 0.5 + 0.0) / 3)  # the mean over problems a, b, c


def test_prompt_set_eval_scores_each_record_with_its_verifier(monkeypatch, tiny_qwen2):
    tok = load_tokenizer(tiny_qwen2)  # byte-level: \\boxed{} survives encoding
    records = [PromptRecord("p1", "what is half?", "\\frac{1}{2}", 1, "math"),
               PromptRecord("p2", "2+2=", "4", 2, "arithmetic")]
    answers = {"what is half?": ["so it is \\boxed{0.5}", "\\boxed{1/3}"], "2+2=": ["<answer>4</answer>", "<answer>4</answer>"]}
    calls = iter([t for r in records for t in answers[r.prompt]])

    def fake_sampled(model, tok, prompts, cfg, seed, stop_ids):
        return [encode(tok, next(calls)) for _ in prompts]

    monkeypatch.setattr(evaluate_module, "_sampled", fake_sampled)
    result = evaluate_prompt_set(None, tok, records, EvalConfig(samples_per_problem=2, pass_k=[1, 2]), seed=0)
    assert result.group_by == "difficulty"
    assert result.levels[1].pass_at_1 == 0.5 and result.levels[1].pass_at_k[2] == 1.0  # math-verify: 0.5 = 1/2
    assert result.levels[2].pass_at_1 == 1.0
    assert result.verdicts == {"math/ok": 1, "math/wrong": 1, "rule/ok": 2}
    d = result.to_dict()
    assert d["pass@1"] == 0.75 and d["pass@2"] == 1.0 and d["group_by"] == "difficulty" and set(d["groups"]) == {"1", "2"}


def test_prompt_set_without_difficulty_groups_by_domain(monkeypatch):
    records = [PromptRecord("p1", "1+1=", "2", None, "arithmetic"), PromptRecord("p2", "2+2=", "4", None, "math")]
    monkeypatch.setattr(evaluate_module, "_sampled", lambda *a: [encode(TOK, "<answer>4</answer>")] * 2)
    result = evaluate_prompt_set(None, TOK, records, EvalConfig(samples_per_problem=1), seed=0)
    assert result.group_by == "domain" and result.levels["arithmetic"].pass_at_1 == 0.0 and result.levels["math"].pass_at_1 == 1.0


def test_prompt_set_overall_numbers_are_means_over_problems(monkeypatch):
    # difficulty 1: p1 right 2 of 2, p2 right 0 of 2; difficulty 2: p3 right 2 of 2 -> over problems (1 + 0 + 1) / 3
    records = [PromptRecord(f"p{i}", f"{i}+0=", str(i), d, "arithmetic") for i, d in ((1, 1), (2, 1), (3, 2))]
    said = {"p1": ["1", "1"], "p2": ["0", "0"], "p3": ["3", "3"]}
    texts = iter(f"<answer>{a}</answer>" for r in records for a in said[r.id])
    monkeypatch.setattr(evaluate_module, "_sampled", lambda model, tok, prompts, *a: [encode(tok, next(texts)) for _ in prompts])
    result = evaluate_prompt_set(None, TOK, records, EvalConfig(samples_per_problem=2, pass_k=[1, 2]), seed=0)
    assert result.pass_at_1 == pytest.approx(2 / 3)  # not the mean of the two groups' means (0.5 + 1) / 2
    assert result.pass_at_k(2) == pytest.approx(2 / 3)  # p1 and p3 solved at least once in 2
    assert result.to_dict()["groups"]["1"] == {"pass@1": 0.5, "pass@2": 0.5, "mean_tokens": 3.0, "long_share": 0.0,
                                               "samples": 4, "problems": 2}
