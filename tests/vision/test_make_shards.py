"""tools/make_shards.py writes every source; the mixture DataModule reads them and the VLM trains on them."""

from __future__ import annotations

import itertools
import runpy
import sys

from k15.data.mixture import MixtureConfig, PretrainDataModule, vlm_inputs
from k15.data.shards import SkipCounter, expand_shards, read_shard


def test_make_shards_writes_sources_the_mixture_reads(tmp_path, monkeypatch, make_vlm, tok):
    argv = ["make_shards.py", str(tmp_path), "--text", "40", "--caption", "12", "--interleaved", "6", "--ocr", "12",
            "--synthetic", "30", "--per-shard", "10"]
    monkeypatch.setattr(sys, "argv", argv)
    runpy.run_path("tools/make_shards.py", run_name="__main__")
    counts = {"text": 4, "caption": 2, "interleaved": 1, "ocr": 2, "synthetic": 3}
    kinds = set()
    for source, n_shards in counts.items():
        urls = expand_shards(tmp_path / source)
        assert len(urls) == n_shards
        docs = [d for url in urls for d in read_shard(url, SkipCounter(source))]
        kinds |= {d.kind for d in docs}
    assert kinds == {"text", "caption", "interleaved", "ocr", "problem", "count", "compare", "chart"}

    vlm = make_vlm(merge=2)
    cfg = MixtureConfig(shards={name: str(tmp_path / name) for name in counts}, weights={name: 1.0 for name in counts},
                        seq_len=96, batch_size=4, shuffle_buffer=8)
    dm = PretrainDataModule.for_model(vlm, tok, cfg)
    batch = next(itertools.islice(dm.train_dataloader(), 2, None))
    assert batch["images"] and batch["source_tokens"].gt(0).sum() >= 3
    assert vlm(**vlm_inputs(batch)).loss.isfinite()
