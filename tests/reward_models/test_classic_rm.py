"""The Classic RM: a scalar head that learns a small separable set and reloads to the same logits."""

import pytest
import torch
import torch.nn.functional as F

from k15.config import OptimConfig
from k15.errors import CheckpointError
from k15.models.decoder import export
from k15.reward_models.classic import (ClassicRM, ClassicRMModule, classic_from_decoder, classic_inputs,
                                       classic_data, export_classic_rm, load_classic_rm)
from k15.reward_models.config import RMDataConfig
from k15.reward_models.data import build_examples, judge_prompt
from k15.reward_models.stages import plain_trainer


def bce(rm: ClassicRM, examples) -> float:
    logits = rm.logits([judge_prompt(ex) for ex in examples])
    return float(F.binary_cross_entropy_with_logits(logits, torch.tensor([float(ex.label) for ex in examples])))


def test_twin_of_the_decoder_starts_at_one_half_and_reads_the_last_real_token(tiny_lm):
    lm, tok = tiny_lm
    model = classic_from_decoder(lm, tok, max_len=96)
    assert type(model).__name__ == "LlamaForSequenceClassification" and model.config.max_position_embeddings == 96
    assert torch.equal(model.model.embed_tokens.weight, lm.model.embed_tokens.weight)
    rm = ClassicRM(model, tok, batch_size=4)
    texts = [judge_prompt(ex) for ex in build_examples(6, "train", RMDataConfig(), 0.1, seed=0)]
    assert rm.score(texts) == [0.5] * 6
    torch.nn.init.normal_(model.score.weight)
    # Padding must not change a row's score: batched (right-padded) equals one at a time.
    alone = torch.cat([rm.logits([t]) for t in texts])
    assert torch.allclose(rm.logits(texts), alone, atol=1e-5)
    assert classic_inputs(tok, texts)["attention_mask"].sum(1).tolist() == [len(tok.encode(t)) + 1 for t in texts]


def test_loss_falls_on_a_small_separable_set_and_the_export_reloads_exactly(tiny_lm, tmp_path):
    lm, tok = tiny_lm
    model = classic_from_decoder(lm, tok, max_len=96)
    examples = build_examples(16, "train", RMDataConfig(), 0.1, seed=0)
    rm = ClassicRM(model, tok)
    before = bce(rm, examples)
    data, dropped = classic_data(tok, examples, 16, seed=0, max_len=96)
    assert dropped == 0
    model.train()
    steps = 40
    plain_trainer(tmp_path, steps, 1.0).fit(ClassicRMModule(model, OptimConfig(lr=3e-3, warmup_steps=2), steps),
                                               datamodule=data)
    rm = ClassicRM(model, tok)
    after = bce(rm, examples)
    assert after < 0.5 * before, (before, after)
    assert sum(j == ex.label for j, ex in zip(rm.judge(examples), examples)) >= 14

    path = export_classic_rm(model, tok, tmp_path / "classic")
    again = load_classic_rm(path)
    texts = [judge_prompt(ex) for ex in examples]
    assert torch.equal(again.logits(texts), rm.logits(texts))


def test_loader_drops_and_counts_examples_longer_than_the_context(tiny_lm):
    _, tok = tiny_lm
    examples = build_examples(20, "train", RMDataConfig(), 0.1, seed=0)
    longest = max(len(tok.encode(judge_prompt(ex))) + 1 for ex in examples)
    _, dropped = classic_data(tok, examples, 4, seed=0, max_len=longest - 1)
    assert 1 <= dropped < 20


def test_a_directory_that_is_not_a_classic_rm_is_refused_in_one_line(tiny_lm, tmp_path):
    lm, tok = tiny_lm
    policy = export(lm, tok, tmp_path / "policy")
    with pytest.raises(CheckpointError, match="is not a k15 reward model"):
        load_classic_rm(policy)
    with pytest.raises(CheckpointError, match="directory not found"):
        load_classic_rm(tmp_path / "missing")
