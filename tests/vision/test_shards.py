"""Webdataset shards: round trip, user formats, and bad data (skipped, counted, then a clear failure)."""

from __future__ import annotations

import io
import logging

import numpy as np
import pytest
import webdataset as wds
from PIL import Image

from k15.data.shards import (SkipCounter, SkipPolicy, expand_shards, read_shard, write_shards,
                             write_text_shards)
from k15.errors import DataError
from k15.synthetic.images import GENERATORS, vision_docs


def read_all(urls, counter):
    return [d for url in urls for d in read_shard(url, counter)]


def test_webdataset_round_trip(tmp_path):
    docs = [d for kind in GENERATORS for d in vision_docs(kind, 3, seed=1)]
    urls = write_shards(docs, tmp_path / "mix-%06d.tar", max_per_shard=8)
    assert len(urls) == 3 and expand_shards(tmp_path) == urls
    counter = SkipCounter("mix")
    back = read_all(urls, counter)
    assert counter.ok_samples == len(docs) and counter.skipped_samples == 0 and counter.ok_shards == 3
    assert [d.key for d in back] == [d.key for d in docs]
    for a, b in zip(docs, back):
        assert (a.kind, a.response, a.answer, a.level) == (b.kind, b.response, b.answer, b.level)
        assert len(a.segments) == len(b.segments)
        for x, y in zip(a.segments, b.segments):
            if isinstance(x, str):
                assert x == y
            else:  # PNG is lossless
                assert np.array_equal(np.asarray(x), np.asarray(y.convert("RGB")))
    texts = write_text_shards([("t0", "3+4=7"), ("t1", "hello")], tmp_path / "text" / "t-%03d.tar")
    back = read_all(texts, SkipCounter("text"))
    assert [(d.kind, d.segments) for d in back] == [("text", ["3+4=7"]), ("text", ["hello"])]


def test_user_caption_and_text_shards_go_through_the_same_code(tmp_path):
    """The common layout of real data: {key}.jpg + {key}.txt, and {key}.txt alone."""
    path = tmp_path / "user-000.tar"
    jpg = io.BytesIO()
    Image.new("RGB", (40, 30), (200, 10, 10)).save(jpg, format="JPEG")
    with wds.TarWriter(str(path)) as sink:
        sink.write({"__key__": "a", "jpg": jpg.getvalue(), "txt": b"a red picture."})
        sink.write({"__key__": "b", "txt": b"just text."})
    docs = list(read_shard(str(path), SkipCounter("user")))
    assert [(d.kind, d.response) for d in docs] == [("caption", "a red picture."), ("text", "")]
    assert docs[0].images[0].size == (40, 30) and docs[1].segments == ["just text."]


def make_bad_data(tmp_path, n_shards=4, per_shard=10, bad_images=0, corrupt_shard=None):
    docs = list(vision_docs("ocr", n_shards * per_shard, seed=0))
    urls = write_shards(docs, tmp_path / "ocr-%06d.tar", max_per_shard=per_shard)
    if bad_images:  # rewrite the first shard with `bad_images` undecodable PNGs
        with wds.TarWriter(urls[0]) as sink:
            for i, d in enumerate(docs[:per_shard]):
                png = io.BytesIO()
                d.images[0].save(png, format="PNG")
                data = png.getvalue()[:40] if i < bad_images else png.getvalue()  # truncated PNG
                sink.write({"__key__": d.key, "json": b'{"segments": [{"image": 0}], "response": "x"}', "0.png": data})
    if corrupt_shard is not None:
        with open(urls[corrupt_shard], "r+b") as f:
            f.seek(600)
            f.write(b"\x00garbage" * 100)
    return urls


def test_undecodable_images_are_counted_and_the_threshold_fails_clearly(tmp_path, caplog):
    urls = make_bad_data(tmp_path, bad_images=3)
    counter = SkipCounter("ocr", SkipPolicy(max_skip_fraction=0.1, min_samples=40))
    with caplog.at_level(logging.WARNING, logger="k15.data"):
        docs = read_all(urls, counter)
    assert len(docs) == 37 and counter.skipped_samples == 3
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 3 and "cannot decode image '0.png'" in warnings[0]
    assert "3 samples and 0 shards skipped" in warnings[-1]
    counter.end_of_pass()  # 7.5% < 10%: the run goes on

    # judged as soon as 10 samples were seen: 3 of them bad
    strict = SkipCounter("ocr", SkipPolicy(max_skip_fraction=0.1, min_samples=10))
    with pytest.raises(DataError) as err:
        read_all(urls, strict)
    message = str(err.value)
    assert "\n" not in message and urls[0] in message and "max_skip_fraction 10.0%" in message
    assert "3 samples and 0 shards skipped, 7 samples read (30.0% skipped) in source 'ocr'" in message


def test_corrupt_shard_is_skipped_with_a_counted_warning(tmp_path, caplog):
    urls = make_bad_data(tmp_path, corrupt_shard=2)
    counter = SkipCounter("ocr", SkipPolicy(max_skip_fraction=0.5, min_samples=10))
    with caplog.at_level(logging.WARNING, logger="k15.data"):
        docs = read_all(urls, counter)
    assert counter.failed_shards == 1 and counter.ok_shards == 3
    assert urls[2] in caplog.records[-1].getMessage() and "unreadable shard" in caplog.records[-1].getMessage()
    assert 30 <= len(docs) < 40
    counter.end_of_pass()
    # a lost shard weighs as much as an average readable one: 10 of 40 samples, 25%
    strict = SkipCounter("ocr", SkipPolicy(max_skip_fraction=0.1, min_samples=10))
    lost = rf"1 shards skipped, 20 samples read \(33.3% skipped\).*last: {urls[2]}: unreadable"
    with pytest.raises(DataError, match=lost):
        read_all(urls, strict)  # fails as soon as the evidence is enough, mid-pass
    patient = SkipCounter("ocr", SkipPolicy(max_skip_fraction=0.1, min_samples=1000))
    read_all(urls, patient)
    with pytest.raises(DataError, match=r"1 shards skipped, 3\d samples read \(2\d.\d% skipped\)"):
        patient.end_of_pass()  # ... and always at the end of a pass
    with pytest.raises(DataError, match="no readable samples in source 'empty'"):
        SkipCounter("empty").end_of_pass()


def test_expand_shards_patterns(tmp_path):
    urls = write_text_shards([(f"k{i}", "x") for i in range(5)], tmp_path / "s-%06d.tar", max_per_shard=2)
    assert expand_shards(str(tmp_path / "s-{000000..000002}.tar")) == urls
    assert expand_shards(str(tmp_path / "s-*.tar")) == urls
    assert expand_shards(",".join(urls[:2])) == urls[:2]
    with pytest.raises(DataError, match="shards not found"):
        expand_shards(str(tmp_path / "nope-{0..1}.tar"))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match="no .tar shards in directory"):
        expand_shards(empty)
