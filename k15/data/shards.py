"""Webdataset shards of (image-)text documents: writing them, and reading them with counted skips.

A shard is a tar file (webdataset layout: the files of one sample share a key, the part of the
name before the first dot). k15 writes every document as

    {key}.json    {"kind", "segments": [{"text": "..."} | {"image": 0}, ...], "response", "answer", "level", "meta"}
    {key}.0.png   the images the segments name, by index

and reads, besides that, the two common layouts of real data, so user shards go through the same
code: `{key}.txt` alone (a text-only document) and `{key}.{jpg,jpeg,png,webp}` + `{key}.txt` (a
caption pair: the image, then its text).

Reading never stops at the first bad sample. An undecodable image or a malformed sample is skipped,
and a shard that cannot be read (a corrupt or truncated tar) is skipped from that point on, each
with a warning that carries the running count (logger `k15.data`). `SkipCounter` keeps the counts
of one source and raises a one-line `DataError` naming the shard once the skipped fraction passes
`max_skip_fraction`: checked after `min_samples` samples (so one early bad sample is not a rate of
100%) and always at the end of a pass over the source. A failed shard counts as many skipped
samples as an average readable shard holds.
"""

from __future__ import annotations

import glob
import io
import json
import logging
import re
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Generator, Iterable, Iterator

import braceexpand
import webdataset as wds
from PIL import Image
from webdataset.tariterators import group_by_keys, tar_file_iterator

from k15.errors import DataError

log = logging.getLogger("k15.data")
IMAGE_EXTENSIONS = ("png", "jpg", "jpeg", "webp")


@dataclass
class Document:
    """One decoded sample: prompt segments (text / Pillow images), the response and its labels."""

    key: str
    kind: str
    segments: list[str | Image.Image]
    response: str = ""
    answer: str | None = None
    level: int | None = None
    meta: dict = field(default_factory=dict)
    url: str = ""

    @property
    def images(self) -> list[Image.Image]:
        return [s for s in self.segments if isinstance(s, Image.Image)]


# ------------------------------------------------------------------------------------------------
# Writing


def encode_document(doc: Any) -> dict[str, Any]:
    """A document (a k15.synthetic.images.VisionDoc, a Document, or a plain text) as webdataset fields."""
    if isinstance(doc, str):
        raise TypeError("give text documents as (key, text) through write_text_shards")
    if "." in doc.key:
        raise ValueError(f"sample key {doc.key!r} contains a dot (webdataset splits file names at the first dot)")
    sample: dict[str, Any] = {"__key__": doc.key}
    segments, n_images = [], 0
    for seg in doc.segments:
        if isinstance(seg, str):
            segments.append({"text": seg})
        else:
            buffer = io.BytesIO()
            seg.save(buffer, format="PNG")
            sample[f"{n_images}.png"] = buffer.getvalue()
            segments.append({"image": n_images})
            n_images += 1
    record = {"kind": doc.kind, "segments": segments, "response": doc.response, "answer": doc.answer,
              "level": doc.level, "meta": doc.meta}
    sample["json"] = json.dumps(record).encode()
    return sample


def write_shards(docs: Iterable[Any], pattern: str | Path, max_per_shard: int = 1000,
                 encode: Callable[[Any], dict] = encode_document,
                 on_sample: Callable[[], None] | None = None) -> list[str]:
    """Write documents into shards named by `pattern` (e.g. "out/ocr-%06d.tar"); returns the shard paths."""
    pattern = str(pattern)
    if "%" not in pattern:
        raise ValueError(f"shard pattern {pattern!r} needs a %d-style field for the shard number")
    Path(pattern).parent.mkdir(parents=True, exist_ok=True)
    written: list[str] = []
    with wds.ShardWriter(pattern, maxcount=max_per_shard, verbose=0, post=written.append) as sink:
        for doc in docs:
            sink.write(encode(doc))
            if on_sample is not None:
                on_sample()
    return written


def encode_text(item: tuple[str, str]) -> dict[str, Any]:
    key, text = item
    return {"__key__": key, "txt": text.encode()}


def write_text_shards(texts: Iterable[tuple[str, str]], pattern: str | Path, max_per_shard: int = 1000,
                      on_sample: Callable[[], None] | None = None) -> list[str]:
    """Text-only documents as `{key}.txt` samples."""
    return write_shards(texts, pattern, max_per_shard, encode=encode_text, on_sample=on_sample)


# ------------------------------------------------------------------------------------------------
# Finding shards


def expand_shards(spec: str | Path | list[str]) -> list[str]:
    """Shard paths from a directory (its *.tar files), a glob, a brace pattern
    ("data/ocr-{000000..000009}.tar"), a comma-separated list, or a list of any of these."""
    if isinstance(spec, (list, tuple)):
        return [p for item in spec for p in expand_shards(item)]
    spec = str(spec)
    if "," in spec and "{" not in spec:
        return expand_shards(spec.split(","))
    path = Path(spec)
    if path.is_dir():
        found = sorted(str(p) for p in path.glob("*.tar"))
        if not found:
            raise DataError(f"no .tar shards in directory {path}")
        return found
    out: list[str] = []
    for item in braceexpand.braceexpand(spec):
        out.extend(sorted(glob.glob(item)) if any(c in item for c in "*?[") else [item])
    missing = [p for p in out if not Path(p).is_file()]
    if not out or missing:
        raise DataError(f"shards not found: {missing[0] if missing else spec}")
    return out


# ------------------------------------------------------------------------------------------------
# Reading


@dataclass
class SkipPolicy:
    max_skip_fraction: float = 0.05  # fail once more than this share of a source's samples is skipped
    min_samples: int = 100  # ... judged after this many samples, and at the end of every pass


class SkipCounter:
    """Counts read and skipped samples (and failed shards) of one source; warns on every skip."""

    def __init__(self, source: str, policy: SkipPolicy | None = None):
        self.source, self.policy = source, policy or SkipPolicy()
        self.ok_samples = self.skipped_samples = 0
        self.ok_shards = self.failed_shards = 0
        self.last = ""
        self._judged = False  # the threshold was checked when the evidence first reached min_samples

    @property
    def skipped(self) -> float:
        """Skipped samples, a failed shard counting as an average readable shard's samples."""
        per_shard = self.ok_samples / self.ok_shards if self.ok_shards else 1.0
        return self.skipped_samples + self.failed_shards * max(1.0, per_shard)

    @property
    def fraction(self) -> float:
        total = self.ok_samples + self.skipped
        return self.skipped / total if total else 0.0

    def summary(self) -> str:
        return (f"{self.skipped_samples} samples and {self.failed_shards} shards skipped, {self.ok_samples} samples "
                f"read ({self.fraction:.1%} skipped) in source '{self.source}'")

    def sample_ok(self) -> None:
        self.ok_samples += 1
        if not self._judged and self.ok_samples + self.skipped >= self.policy.min_samples:
            self._judged = True
            self.check()

    def skip_sample(self, url: str, key: str, reason: str) -> None:
        self.skipped_samples += 1
        self.last = f"{url}: sample '{key}': {reason}"
        log.warning("skipped %s [%s]", self.last, self.summary())
        self.check()

    def shard_done(self, url: str) -> None:
        self.ok_shards += 1

    def shard_failed(self, url: str, reason: str) -> None:
        self.failed_shards += 1
        self.last = f"{url}: unreadable shard: {reason}"
        log.warning("skipped %s [%s]", self.last, self.summary())
        self.check()

    def check(self, final: bool = False) -> None:
        """Raise a DataError when the skipped fraction is over the threshold (and there is evidence enough)."""
        p = self.policy
        enough = final or self.ok_samples + self.skipped >= p.min_samples
        if enough and self.fraction > p.max_skip_fraction:
            raise DataError(f"too much unreadable data: {self.summary()} > max_skip_fraction "
                            f"{p.max_skip_fraction:.1%}; last: {self.last}")

    def end_of_pass(self) -> None:
        if self.ok_samples == 0:
            raise DataError(f"no readable samples in source '{self.source}'"
                            + (f"; last: {self.last}" if self.last else ""))
        self.check(final=True)


class _BadSample(Exception):
    pass


def _decode_image(data: bytes, name: str) -> Image.Image:
    try:
        image = Image.open(io.BytesIO(data))
        image.load()
    except Exception as exc:  # Pillow raises many types (OSError, SyntaxError, ValueError, ...)
        detail = re.sub(r" ?<[^>]*>", "", str(exc).splitlines()[0] if str(exc) else "")
        raise _BadSample(f"cannot decode image '{name}' ({type(exc).__name__}: {detail})") from None
    return image


def decode_sample(sample: dict[str, Any]) -> Document:
    """Raw webdataset fields -> a Document; raises _BadSample with the reason."""
    key, url = sample.get("__key__", "?"), sample.get("__url__", "")
    if "json" in sample:
        try:
            record = json.loads(sample["json"])
            segments = []
            for seg in record["segments"]:
                if "text" in seg:
                    segments.append(str(seg["text"]))
                else:
                    names = [f"{seg['image']}.{ext}" for ext in IMAGE_EXTENSIONS]
                    name = next((n for n in names if n in sample), None)
                    if name is None:
                        raise _BadSample(f"image {seg['image']} named in its json is missing")
                    segments.append(_decode_image(sample[name], name))
        except (ValueError, KeyError, TypeError) as exc:
            raise _BadSample(f"malformed json ({type(exc).__name__}: {exc})") from None
        return Document(key, record.get("kind", "interleaved"), segments, record.get("response", "") or "",
                        record.get("answer"), record.get("level"), record.get("meta") or {}, url)
    text = sample.get("txt")
    if text is None:
        raise _BadSample("neither a .json nor a .txt field")
    try:
        text = text.decode("utf-8")
    except UnicodeDecodeError:
        raise _BadSample("text is not UTF-8") from None
    image_name = next((ext for ext in IMAGE_EXTENSIONS if ext in sample), None)
    if image_name is None:
        return Document(key, "text", [text], url=url)
    return Document(key, "caption", [_decode_image(sample[image_name], f"{key}.{image_name}")], text, url=url)


def raw_samples(url: str) -> Iterator[dict[str, Any]]:
    """The undecoded samples of one shard (dicts of bytes by extension); raises on a corrupt tar."""
    with open(url, "rb") as stream:
        files = tar_file_iterator(stream)
        for sample in group_by_keys({**f, "__url__": url} for f in files):
            yield sample


def read_shard(url: str, counter: SkipCounter,
               keep: Callable[[int], bool] | None = None) -> Generator[Document, None, int]:
    """Decoded documents of one shard. Bad samples and a corrupt tail are skipped and counted.

    `keep(i)`: decode only the shard's i-th sample when true (splitting one shard between readers).
    Returns (as the generator's value) the number of samples in the shard, read or not.
    """
    n = 0
    try:
        for sample in raw_samples(url):
            n += 1
            if keep is not None and not keep(n - 1):
                continue
            try:
                doc = decode_sample(sample)
            except _BadSample as exc:
                counter.skip_sample(url, sample.get("__key__", "?"), str(exc))
                continue
            counter.sample_ok()
            yield doc
    except (tarfile.TarError, OSError, EOFError, ValueError) as exc:
        counter.shard_failed(url, f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else 'corrupt tar'}")
        return n
    counter.shard_done(url)
    return n
