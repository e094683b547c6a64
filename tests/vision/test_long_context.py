"""Long-context activation (stage 3): row lengths by schedule, full-attention rows, raising the RoPE base."""

from __future__ import annotations

import itertools

import pytest
import torch

from k15.config import ModelConfig, WorldConfig
from k15.data.mixture import MixtureConfig, PretrainDataModule, full_attention_rows, vlm_inputs
from k15.data.shards import write_shards, write_text_shards
from k15.errors import ConfigError
from k15.models.decoder import build_decoder, load_decoder
from k15.models.rope import set_rope_theta
from k15.synthetic.corpus import pretrain_documents
from k15.synthetic.images import vision_docs

TEXT = dict(hidden_size=32, num_layers=2, num_heads=4, num_kv_heads=2, intermediate_size=64, max_seq_len=128)
SCHEDULE = dict(seq_len=32, batch_size=8, seq_len_schedule=[32, 64, 128], schedule_batches=2)


@pytest.fixture(scope="module")
def shard_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("shards")
    texts = pretrain_documents(WorldConfig(), 80, {"raw": 0.3, "short": 0.2, "long": 0.5}, 0)
    write_text_shards(((f"t{i:04d}", t) for i, t in enumerate(texts)), root / "text" / "text-%06d.tar", 20)
    write_shards(vision_docs("ocr", 20, seed=0), root / "ocr" / "ocr-%06d.tar", 5)
    return root


def datamodule(vlm, tok, root, **cfg):
    weights = {"text": 0.8, "ocr": 0.2}
    cfg = MixtureConfig(shards={n: str(root / n) for n in weights}, weights=weights, shuffle_buffer=8, **cfg)
    return PretrainDataModule.for_model(vlm, tok, cfg)


def test_row_length_follows_the_schedule_with_constant_tokens_per_batch(make_vlm, tok, shard_dirs):
    vlm = make_vlm()
    batches = list(itertools.islice(datamodule(vlm, tok, shard_dirs, **SCHEDULE).train_dataloader(), 7))
    shapes = [tuple(b["input_ids"].shape) for b in batches]
    assert shapes == [(8, 32), (8, 32), (4, 64), (4, 64), (2, 128), (2, 128), (2, 128)]  # the last phase stays
    for b in batches:
        real = int((b["doc_ids"] >= 0).sum())
        assert b["input_ids"].numel() == 8 * 32  # batch_size * seq_len slots, whatever the row length
        assert real > 0.6 * 8 * 32  # and most of them real tokens (short rows pack the least well)
        assert int(b["source_tokens"].sum()) == real
    # documents are cut to the shortest row, so each fits every phase
    assert all(int(b["position_ids"].max()) < 32 for b in batches)
    assert any(int(b["doc_ids"].max()) > 2 for b in batches[4:])  # long rows hold several documents
    assert sum(len(b["images"]) for b in batches) > 0
    assert vlm(**vlm_inputs(batches[-1])).loss.isfinite()  # a long row, images and all, runs through the model


def test_resume_continues_the_schedule_at_its_phase(make_vlm, tok, shard_dirs):
    vlm = make_vlm()
    full = list(itertools.islice(datamodule(vlm, tok, shard_dirs, **SCHEDULE).train_dataloader(), 5))
    dm = datamodule(vlm, tok, shard_dirs, **SCHEDULE)
    dm.resume_from(3)  # skipped batches count: batch 3 is in the 64-token phase
    resumed = list(itertools.islice(dm.train_dataloader(), 2))
    assert [tuple(b["input_ids"].shape) for b in resumed] == [(4, 64), (2, 128)]
    assert torch.equal(resumed[0]["input_ids"], full[3]["input_ids"])
    assert torch.equal(resumed[1]["input_ids"], full[4]["input_ids"])


def test_loader_workers_follow_the_schedule_and_resume_in_order(make_vlm, tok, shard_dirs):
    vlm = make_vlm()
    full = list(itertools.islice(datamodule(vlm, tok, shard_dirs, **SCHEDULE, num_workers=2).train_dataloader(), 5))
    assert [tuple(b["input_ids"].shape) for b in full] == [(8, 32)] * 2 + [(4, 64)] * 2 + [(2, 128)]
    dm = datamodule(vlm, tok, shard_dirs, **SCHEDULE, num_workers=2)
    dm.resume_from(1)  # an odd count: the loader still starts at worker 0, which takes over worker 1's part
    resumed = list(itertools.islice(dm.train_dataloader(), 4))
    for a, b in zip(resumed, full[1:]):
        assert torch.equal(a["input_ids"], b["input_ids"])


def test_full_attention_rows_join_their_documents(make_vlm, tok, shard_dirs):
    vlm = make_vlm()
    dm = datamodule(vlm, tok, shard_dirs, seq_len=32, batch_size=10, seq_len_schedule=[32, 64],
                    schedule_batches=1, full_attention_share=0.4)
    batches = list(itertools.islice(dm.train_dataloader(), 4))
    rows = full = joined = longest = 0
    for b in batches:
        marks = b["full_attention_rows"]
        assert marks.dtype == torch.bool and marks.shape == b["input_ids"].shape[:1]
        for r in range(len(marks)):
            docs, pos = b["doc_ids"][r], b["position_ids"][r]
            used = int((docs >= 0).sum())
            starts = (b["input_ids"][r, :used] == tok.bos_token_id).nonzero().flatten()
            assert (b["labels"][r, starts] == -100).all()  # no loss on a document's first token, either way
            if marks[r]:  # one sequence: attention and positions span the row
                assert (docs[:used] == 0).all() and torch.equal(pos[:used], torch.arange(used))
                joined += len(starts) > 1
                longest = max(longest, int(pos.max()))
            else:  # partial attention: positions restart at every document
                assert int(docs.max()) + 1 == len(starts)
                assert (pos[starts] == 0).all() and int(pos[:used].max()) < 32
            assert (docs[used:] == -1).all()
        rows, full = rows + len(marks), full + int(marks.sum())
    assert full / rows == 0.4 and joined > 0
    assert longest >= 32  # positions past any document's length get trained
    assert vlm(**vlm_inputs(batches[0])).loss.isfinite()


def test_full_attention_share_is_spread_over_the_rows():
    assert full_attention_rows(5, 0.4).tolist() == [False, False, True, False, True]
    for rows, share in ((10, 0.4), (10, 0.3), (20, 0.6), (7, 1.0), (7, 0.0), (3, 0.1)):
        assert int(full_attention_rows(rows, share).sum()) == int(rows * share + 1e-9)


def test_schedule_and_share_are_checked():
    base = dict(shards={"text": "x"}, weights={"text": 1.0})
    with pytest.raises(ConfigError, match=r"mixture seq_len_schedule .*non-decreasing; got \[64, 32\]"):
        MixtureConfig(**base, seq_len_schedule=[64, 32], schedule_batches=1).validate()
    with pytest.raises(ConfigError, match="mixture seq_len_schedule"):
        MixtureConfig(**base, seq_len_schedule=[0, 32], schedule_batches=1).validate()
    with pytest.raises(ConfigError, match="mixture schedule_batches must be >= 1"):
        MixtureConfig(**base, seq_len_schedule=[32, 64]).validate()
    for share in (-0.1, 1.5):
        with pytest.raises(ConfigError, match=r"mixture full_attention_share must be in \[0, 1\]"):
            MixtureConfig(**base, full_attention_share=share).validate()
    cfg = MixtureConfig(**base, seq_len=64, batch_size=4, seq_len_schedule=[16, 256], schedule_batches=3)
    cfg.validate()
    assert cfg.max_doc_len == 16
    assert [cfg.batch_shape(b) for b in (0, 2, 3, 100)] == [(16, 16), (16, 16), (1, 256), (1, 256)]


@pytest.mark.parametrize("family", ["llama", "qwen2"])
def test_set_rope_theta_matches_a_model_built_with_that_base_and_is_saved(tok, tmp_path, family):
    torch.manual_seed(0)
    decoder = build_decoder(ModelConfig(family=family, **TEXT), tok).eval()
    with torch.no_grad():  # off the small init, where the attention (and so the base) barely matters
        for p in decoder.parameters():
            p.add_(0.3 * torch.randn_like(p))
    ids = torch.randint(5, len(tok), (1, 96))

    def logits(model):
        with torch.no_grad():
            return model(input_ids=ids).logits

    before = logits(decoder)
    set_rope_theta(decoder, 1e6, max_positions=512)
    after = logits(decoder)
    assert torch.allclose(after[:, 0], before[:, 0], atol=1e-5)  # position 0 is not rotated, whatever the base
    assert not torch.allclose(after[:, -1], before[:, -1], atol=1e-3)  # long positions move

    fresh = build_decoder(ModelConfig(family=family, **{**TEXT, "max_seq_len": 512}, rope_theta=1e6), tok).eval()
    fresh.load_state_dict(decoder.state_dict())
    assert torch.allclose(logits(fresh), after, atol=1e-5)

    decoder.save_pretrained(tmp_path)
    reloaded = load_decoder(tmp_path).eval()
    assert reloaded.config.rope_parameters["rope_theta"] == 1e6 and reloaded.config.max_position_embeddings == 512
    assert torch.allclose(logits(reloaded), after, atol=1e-5)
    with pytest.raises(ConfigError, match="rope_theta must be > 0"):
        set_rope_theta(decoder, 0.0)
