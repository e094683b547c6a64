"""The curation pass on the planted set: each filter removes what was planted for it, and only that."""

import json
import re
import runpy
import sys
from itertools import cycle

import pytest
import torch

import k15.curation.sampling as sampling_module
from k15.config import ModelConfig
from k15.curation.curate import CurationConfig, curate
from k15.curation.sampling import ModelSampler
from k15.data.prompts import PromptRecord, read_prompt_set, write_prompt_set
from k15.models.decoder import build_decoder
from k15.rewards.registry import RewardRegistry
from k15.synthetic.hackable import planted_prompt_set
from k15.tokenizer import build_synthetic_tokenizer, encode, prompt_ids

ARITH = re.compile(r"\d(?:[-+]\d)*=")


def solve(prompt: str) -> str:
    return str(eval(prompt.strip().rstrip("=")))  # the planted prompts are digit chains: safe to evaluate


class FakeModel:
    """Without CoT it knows one-step sums and guesses yes/no questions both ways; with CoT it solves a
    level-L problem in 10 - L of 10 samples; anything else it answers wrong."""

    def __init__(self):
        self.calls = []

    def sample(self, prompts, n, temperature, no_cot):
        self.calls.append((len(prompts), n, temperature, no_cot))
        out = []
        for p in prompts:
            if p.startswith("is "):
                texts = [f"<answer>{a}</answer>" for a, _ in zip(cycle(["yes", "no"]), range(n))]
            elif ARITH.fullmatch(p):
                level, right = p.count("+") + p.count("-"), solve(p)
                if no_cot:
                    texts = [f"<answer>{right if level == 1 else 'x'}</answer>"] * n
                else:
                    answers = [right if k < 10 - level else "x" for k in range(n)]
                    texts = [f"<think>{level}:...</think><answer>{a}</answer>" for a in answers]
            else:
                texts = ["<answer>x</answer>"] * n
            out.append(texts)
        return out


def test_each_filter_removes_what_was_planted():
    records = planted_prompt_set(n_clean=40, n_each=4, seed=0)
    model = FakeModel()
    with RewardRegistry() as registry:
        kept, report = curate(records, model, registry, CurationConfig())
    level1 = [r.id for r in records if r.id.startswith("arith/") and r.difficulty == 1]
    assert level1, "the planted set should hold some one-step problems"
    assert report.removed == {
        "duplicate": 4, "multiple_choice": 8, "true_false": 8, "proof": 8,
        "guessable_without_cot": 4 + len(level1), "trivial": 0,
    }
    yes_no = [f"plant/yes_no/{i}" for i in range(4)]
    assert sorted(report.removed_ids["guessable_without_cot"]) == sorted(level1 + yes_no)
    assert report.kept == len(kept) == 40 - len(level1)
    assert all(r.pass_rate == (10 - r.difficulty) / 10 for r in kept)
    assert {r.domain for r in kept} == {"arithmetic"}  # the "auto" ones were tagged
    assert model.calls == [(72 - 4 - 24, 8, 1.2, True), (40 - len(level1), 10, 1.2, False)]


def test_trivial_filter_and_exempt_domains():
    code = PromptRecord("c", "print the sum", "print(3)", 1, "code", tests=({"input": "", "output": "3\n"},))
    easy = PromptRecord("a", "3+4-2=", "5", 2, "arithmetic")
    hard = PromptRecord("b", "3+4-2-1-1-1=", "2", 5, "arithmetic")
    records = [easy, hard, code]
    model = FakeModel()
    with RewardRegistry() as registry:
        kept, report = curate(records, model, registry, CurationConfig(max_pass_rate=0.6))
    assert [r.id for r in kept] == ["b", "c"] and report.removed["trivial"] == 1
    assert kept[1].pass_rate == 0.0  # the fake writes no program: every sample fails in the sandbox
    assert model.calls[0][0] == 2  # the code prompt skipped the no-CoT guess


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    torch.manual_seed(0)
    tok = build_synthetic_tokenizer()
    cfg = ModelConfig(hidden_size=32, num_layers=1, num_heads=2, num_kv_heads=2, intermediate_size=64, max_seq_len=96)
    model = build_decoder(cfg, tok)
    path = tmp_path_factory.mktemp("tiny")
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return model, tok, path


def test_model_sampler_forces_the_answer_format(tiny, monkeypatch):
    model, tok, _ = tiny
    seen = []
    real = sampling_module.sample_responses

    def spy(model, tok, prompts, temperature, max_new_tokens, batch_size, seed, stop_ids):
        seen.append((prompts, temperature, max_new_tokens, seed))
        return real(model, tok, prompts, temperature, max_new_tokens, batch_size, seed, stop_ids)

    monkeypatch.setattr(sampling_module, "sample_responses", spy)
    sampler = ModelSampler(model, tok, max_new_tokens=20, no_cot_max_new_tokens=4, batch_size=16, seed=0)
    answer_id = tok.convert_tokens_to_ids("<answer>")
    guesses = sampler.sample(["3+4=", "is 2+2 equal to 4? answer yes or no."], 8, 1.2, no_cot=True)
    thoughts = sampler.sample(["3+4="], 10, 1.2, no_cot=False)
    assert [len(g) for g in guesses] == [8, 8] and len(thoughts[0]) == 10
    assert all(t.startswith("<answer>") for g in guesses for t in g)
    (forced, t1, n1, seed1), (free, t2, n2, seed2) = seen
    assert all(ids[-1] == answer_id for ids in forced) and not any(ids[-1] == answer_id for ids in free)
    assert (t1, n1, t2, n2) == (1.2, 4, 1.2, 20) and seed1 != seed2  # fresh samples on every call


def test_curate_tool_end_to_end(tiny, tmp_path, monkeypatch, capsys):
    _, _, model_dir = tiny
    write_prompt_set(planted_prompt_set(n_clean=20, n_each=2, seed=1), tmp_path / "in.jsonl")
    argv = ["curate_prompts.py", "--prompts", str(tmp_path / "in.jsonl"), "--model", str(model_dir),
            "--out", str(tmp_path / "out.jsonl"), "--max-new-tokens", "24", "--samples", "3", "--no-cot-tries", "2"]
    monkeypatch.setattr(sys, "argv", argv)
    with pytest.raises(SystemExit) as done:
        runpy.run_path("tools/curate_prompts.py", run_name="__main__")
    assert done.value.code == 0
    out = capsys.readouterr().out
    for name, count in [("duplicate", 2), ("multiple_choice", 4), ("true_false", 4), ("proof", 4)]:
        assert re.search(rf"{name}\s+\S\s+{count}\b", out), out
    kept = read_prompt_set(tmp_path / "out.jsonl")
    rows = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert all("pass_rate" in row and "difficulty" in row for row in rows)
    assert all(r.domain in ("arithmetic", "general") for r in kept)
    assert f"kept {len(kept)} of 36 prompts" in out


def test_a_real_model_that_always_says_yes_guesses_exactly_the_yes_questions():
    """A tiny model trained for a second to answer "yes" directly: the no-CoT filter, through the real
    sampler and verifier, removes the questions whose answer is yes and keeps those whose answer is no."""
    torch.manual_seed(0)
    tok = build_synthetic_tokenizer()
    cfg = ModelConfig(hidden_size=32, num_layers=1, num_heads=2, num_kv_heads=2, intermediate_size=64, max_seq_len=96)
    model = build_decoder(cfg, tok)
    records = [r for r in planted_prompt_set(n_clean=10, n_each=24, seed=0) if r.id.startswith("plant/yes_no/")]
    seqs = [prompt_ids(tok, r.prompt) + encode(tok, "<answer>yes</answer>") for r in records]
    width = max(map(len, seqs))
    ids = torch.tensor([s + [tok.pad_token_id] * (width - len(s)) for s in seqs])
    mask = torch.tensor([[1] * len(s) + [0] * (width - len(s)) for s in seqs])
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for _ in range(60):
        loss = model(input_ids=ids, attention_mask=mask, labels=ids.masked_fill(mask == 0, -100)).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    sampler = ModelSampler(model, tok, max_new_tokens=24, no_cot_max_new_tokens=6, batch_size=64, seed=0)
    with RewardRegistry() as registry:
        kept, report = curate(records, sampler, registry, CurationConfig(samples=2))
    yes = sorted(r.id for r in records if r.answer == "yes")
    assert 0 < len(yes) < len(records)
    assert sorted(report.removed_ids["guessable_without_cot"]) == yes
    assert {r.answer for r in kept} == {"no"}
