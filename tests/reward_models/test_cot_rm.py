"""The CoT RM: trained on rationale + verdict only, it learns to write a verdict, and reloads to the same text."""

import pytest
import torch

from k15.config import OptimConfig
from k15.data.packing import IGNORE, model_inputs
from k15.errors import CheckpointError
from k15.reward_models.classic import classic_from_decoder, export_classic_rm
from k15.reward_models.config import RMDataConfig
from k15.reward_models.cot import CoTRM, CoTRMModule, cot_example, cot_data, cot_target, export_cot_rm, load_cot_rm, with_context
from k15.reward_models.data import build_examples, judge_prompt
from k15.reward_models.stages import plain_trainer
from k15.tokenizer import prompt_ids


def short_examples(n: int):
    """The shortest of a drawn set (no units, no sentences), so a tiny model learns them in a few steps."""
    pool = build_examples(200, "train", RMDataConfig(unit_share=0.0), 0.1, seed=0)
    pos = sorted((ex for ex in pool if ex.label), key=lambda ex: len(judge_prompt(ex)))[: n // 2]
    neg = sorted((ex for ex in pool if not ex.label), key=lambda ex: len(judge_prompt(ex)))[: n - n // 2]
    return pos + neg


def test_loss_is_on_rationale_verdict_and_end_only(tiny_lm):
    _, tok = tiny_lm
    ex = short_examples(2)[1]
    ids, labels = cot_example(tok, ex, "plain")
    prompt = prompt_ids(tok, judge_prompt(ex))
    assert ids[: len(prompt)] == prompt and labels[: len(prompt)] == [IGNORE] * len(prompt)
    assert tok.decode(labels[len(prompt):-1]) == cot_target(ex, "plain") and labels[-1] == tok.eos_token_id
    assert cot_target(ex, "plain").endswith("correct: false")


def test_a_few_steps_teach_verdicts_and_the_export_writes_the_same_text(tiny_lm, tmp_path):
    model, tok = tiny_lm
    model = with_context(model, 96)
    examples = short_examples(4)
    data, dropped = cot_data(tok, examples, "plain", 4, seed=0, max_len=96)
    assert dropped == 0
    module = CoTRMModule(model, tok, OptimConfig(lr=1e-2, warmup_steps=5, min_lr_ratio=0.5), 120)
    first = _loss(module, data)
    model.train()
    plain_trainer(tmp_path, 120, 1.0).fit(module, datamodule=data)
    last = _loss(module, data)
    assert last < 0.2 * first, (first, last)

    rm = CoTRM(model, tok, max_new_tokens=96, batch_size=4)
    judged = rm.judge(examples)
    assert [j.correct for j in judged] == [ex.label for ex in examples], [j.text for j in judged]
    assert all(j.reason == "ok" for j in judged)

    path = export_cot_rm(model, tok, tmp_path / "cot", "plain")
    again = load_cot_rm(path, max_new_tokens=96, batch_size=4)
    assert [j.text for j in again.judge(examples)] == [j.text for j in judged]


def test_an_untrained_rm_is_unparsed_not_guessed(tiny_lm):
    model, tok = tiny_lm
    judged = CoTRM(with_context(model, 96), tok, max_new_tokens=8).judge(short_examples(2))
    assert [(j.correct, j.reason) for j in judged] == [(None, "unparsed")] * 2


def test_a_classic_rm_is_not_a_cot_rm(tiny_lm, tmp_path):
    lm, tok = tiny_lm
    path = export_classic_rm(classic_from_decoder(lm, tok), tok, tmp_path / "classic")
    with pytest.raises(CheckpointError, match="is a classic reward model, not a cot one"):
        load_cot_rm(path)


@torch.no_grad()
def _loss(module, data) -> float:
    return float(module.model(**model_inputs(next(iter(data.train_dataloader())))).loss)
