"""The pretraining mixture: weighted sources, packing with images, rank/worker splits, bad data, resume."""

from __future__ import annotations

import itertools
from types import SimpleNamespace

import pytest
import torch
from omegaconf import OmegaConf

from k15.data.mixture import (MixtureConfig, MixtureStream, PretrainDataModule, _resolve_rank, tokenize_document,
                              vlm_inputs)
from k15.data.shards import Document, SkipCounter, write_shards, write_text_shards
from k15.errors import ConfigError, DataError
from k15.models.vlm import check_placeholders
from k15.config import WorldConfig
from k15.synthetic.corpus import pretrain_documents
from k15.synthetic.images import vision_docs


@pytest.fixture(scope="module")
def shard_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("shards")
    texts = pretrain_documents(WorldConfig(), 120, {"raw": 0.3, "short": 0.2, "long": 0.5}, 0)
    write_text_shards(((f"t{i:04d}", t) for i, t in enumerate(texts)), root / "text" / "text-%06d.tar", 20)
    write_shards(vision_docs("ocr", 30, seed=0), root / "ocr" / "ocr-%06d.tar", 5)  # 6 shards
    write_shards(vision_docs("problem", 40, seed=0), root / "problem" / "problem-%06d.tar", 40)  # 1 shard
    write_shards(vision_docs("caption", 10, seed=0), root / "caption" / "caption-%06d.tar", 10)
    return root


def datamodule(vlm, tok, root, weights, **kw):
    shards = {name: str(root / name) for name in weights}
    sizes = {"seq_len": 64, "batch_size": 4, "shuffle_buffer": 16, **kw.pop("cfg", {})}
    cfg = MixtureConfig(shards=shards, weights=weights, **sizes)
    return PretrainDataModule.for_model(vlm, tok, cfg, **kw)


def test_batches_carry_images_in_placeholder_order_and_train(make_vlm, tok, shard_dirs):
    vlm = make_vlm(merge=2)  # 16x224 strips -> 2x28 patches -> 14 tokens
    dm = datamodule(vlm, tok, shard_dirs, {"text": 0.5, "ocr": 0.25, "problem": 0.25})
    batches = list(itertools.islice(dm.train_dataloader(), 6))
    for batch in batches:
        assert batch["input_ids"].shape == (4, 64)
        counts = [vlm.tokens_per_image(*img.shape[-2:]) for img in batch["images"]]
        check_placeholders(batch["input_ids"], vlm.image_token_id, counts)  # every run is whole images, in order
        assert (batch["labels"][batch["input_ids"] == vlm.image_token_id] == -100).all()
        assert int(batch["source_tokens"].sum()) == int((batch["doc_ids"] >= 0).sum())
        assert len(batch["keys"]) == int(batch["doc_ids"].max(dim=1).values.add(1).sum())
    assert sum(len(b["images"]) for b in batches) > 4
    vlm.train()
    vlm(**vlm_inputs(batches[0])).loss.backward()
    assert vlm.tower.patch_embed.weight.grad.abs().sum() > 0


def test_weights_are_token_shares(make_vlm, tok, shard_dirs):
    vlm = make_vlm()
    dm = datamodule(vlm, tok, shard_dirs, {"text": 0.75, "ocr": 0.25, "caption": 0.0})
    tokens = sum(b["source_tokens"] for b in itertools.islice(dm.train_dataloader(), 10)).double()
    shares = (tokens / tokens.sum()).tolist()
    assert shares[2] == 0.0 and abs(shares[0] - 0.75) < 0.04, shares


def test_shares_move_from_weights_to_weights_end(make_vlm, tok, shard_dirs):
    vlm = make_vlm()
    dm = datamodule(vlm, tok, shard_dirs, {"text": 0.9, "ocr": 0.1},
                    cfg={"weights_end": {"text": 0.5, "ocr": 0.5}, "ramp_batches": 20})
    batches = list(itertools.islice(dm.train_dataloader(), 40))
    share = lambda bs: float(sum(b["source_tokens"][1] for b in bs) / sum(b["source_tokens"].sum() for b in bs))  # noqa: E731
    early, late = share(batches[:8]), share(batches[-10:])
    assert early < 0.25 and 0.4 < late < 0.6, (early, late)  # from ~10% to ~50% of the tokens
    assert dm.cfg.shares_at(10).tolist() == pytest.approx([0.7, 0.3])
    with pytest.raises(ConfigError, match="weights_end must be >= 0 with one > 0, and ramp_batches >= 1"):
        MixtureConfig(shards={"a": "x"}, weights={"a": 1.0}, weights_end={"a": 1.0}).validate()


def test_mixture_config_checks_and_overrides(make_vlm, tok, shard_dirs):
    vlm = make_vlm()
    shards = {"text": str(shard_dirs / "text"), "ocr": str(shard_dirs / "ocr")}
    with pytest.raises(ConfigError, match=r"mixture weights name unknown sources \['ocrr'\]; sources: text, ocr"):
        MixtureConfig(shards=shards, weights={"text": 1.0, "ocrr": 1.0}).validate()
    with pytest.raises(ConfigError, match="at least one > 0"):
        MixtureConfig(shards=shards, weights={"text": 0.0}).validate()
    # a source that is off is never looked up (a stage may name shards it does not have yet)
    cfg = MixtureConfig(shards={"text": str(shard_dirs / "text"), "later": "/nowhere/*.tar"}, weights={"text": 1.0})
    PretrainDataModule.for_model(vlm, tok, cfg).dataset()
    # the config is plain data for the typed schema: a command-line override replaces the weights
    node = OmegaConf.structured(MixtureConfig)
    OmegaConf.update(node, "weights", {"text": 0.7, "ocr": 0.3}, merge=False)
    assert OmegaConf.to_object(node).weights == {"text": 0.7, "ocr": 0.3}


def test_documents_are_cut_before_an_image_never_through_it(tok):
    doc = Document("k", "interleaved", ["ab", object(), "cd", object(), "ef"])

    def run(max_len):
        return tokenize_document(doc, tok, lambda img: torch.zeros(3, 16, 16), lambda h, w: 5, 99, max_len)

    ids, labels, images = run(None)
    assert len(ids) == 1 + 2 + 5 + 2 + 5 + 2 + 1 and len(images) == 2
    assert len(run(16)[0]) == 16 and len(run(16)[2]) == 2  # both images end before 16: a plain cut
    ids, labels, images = run(12)  # the second image's run [10, 15) would be cut: cut before it
    assert len(ids) == 10 and len(images) == 1 and ids.count(99) == 5
    assert ids[-2:] == tok.encode("cd", add_special_tokens=False)
    ids, labels, images = run(9)  # the second image starts after the cut: dropped, the text cut at 9
    assert len(ids) == 9 and len(images) == 1
    head = [tok.bos_token_id] + tok.encode("ab", add_special_tokens=False)
    assert run(7) == (head, head, [])  # even the first image does not fit: the text before it stays
    only_image = Document("k", "ocr", [object()], "xyz")
    assert tokenize_document(only_image, tok, lambda img: torch.zeros(3, 16, 16), lambda h, w: 5, 99, 4) is None


def slot_keys(stream: MixtureStream, source: int, slot: int, slots: int, n: int = 60) -> set[str]:
    return {d.key for d in itertools.islice(stream._documents(source, slot, slots), n)}


def test_ranks_and_workers_read_disjoint_parts(make_vlm, tok, shard_dirs):
    vlm = make_vlm()
    dm = datamodule(vlm, tok, shard_dirs, {"ocr": 0.5, "problem": 0.5}, rank=0, world_size=1)
    stream = dm.dataset()
    stream.counters = [SkipCounter("ocr"), SkipCounter("problem")]
    # ocr: 6 shards over 4 slots (split by shard); problem: 1 shard (split by sample index)
    for source, total in ((0, 30), (1, 40)):
        parts = [slot_keys(stream, source, slot, 4) for slot in range(4)]
        assert sum(len(p) for p in parts) == total and len(set().union(*parts)) == total
        assert all(parts)

    # end to end: 2 ranks x 2 loader workers; batch j of a rank comes from its worker j % 2
    seen = {}
    for rank in range(2):
        dm = datamodule(vlm, tok, shard_dirs, {"ocr": 0.5, "problem": 0.5}, rank=rank, world_size=2,
                        cfg={"num_workers": 2, "shuffle_buffer": 4})
        loader = iter(dm.train_dataloader())
        for j in range(6):
            seen.setdefault((rank, j % 2), set()).update(next(loader)["keys"])
        del loader
    slots = list(seen.values())
    assert all(slots)
    for a, b in itertools.combinations(slots, 2):
        assert not a & b


def test_bad_data_in_a_loader_worker_fails_in_the_main_process_in_one_line(make_vlm, tok, tmp_path):
    urls = write_shards(vision_docs("ocr", 40, seed=0), tmp_path / "ocr" / "ocr-%06d.tar", 10)
    with open(urls[1], "r+b") as f:
        f.seek(600)
        f.write(b"\x00garbage" * 100)
    vlm = make_vlm()
    cfg = {"num_workers": 2, "max_skip_fraction": 0.05, "min_samples_before_failing": 5}
    dm = datamodule(vlm, tok, tmp_path, {"ocr": 1.0}, cfg=cfg)
    with pytest.raises(DataError) as err:
        for _ in itertools.islice(dm.train_dataloader(), 50):
            pass
    message = str(err.value)
    assert "\n" not in message and "unreadable shard" in message and urls[1] in message
    assert "Traceback" not in message


def test_resume_from_skips_exactly_the_served_batches(make_vlm, tok, shard_dirs):
    vlm = make_vlm()
    weights = {"text": 0.6, "ocr": 0.4}
    full = [b["input_ids"] for b in itertools.islice(datamodule(vlm, tok, shard_dirs, weights).train_dataloader(), 5)]
    dm = datamodule(vlm, tok, shard_dirs, weights)
    dm.resume_from(3)
    resumed = [b["input_ids"] for b in itertools.islice(dm.train_dataloader(), 2)]
    assert torch.equal(resumed[0], full[3]) and torch.equal(resumed[1], full[4])


def test_rank_comes_from_args_then_trainer_then_distributed():
    trainer = SimpleNamespace(global_rank=3, world_size=8)
    assert _resolve_rank(trainer, 1, 2) == (1, 2)
    assert _resolve_rank(trainer, None, None) == (3, 8)
    assert _resolve_rank(None, None, None) == (0, 1)  # torch.distributed is not initialised in tests
