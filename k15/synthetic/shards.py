"""The synthetic world's vision-language pretraining sources, written as webdataset shards.

    written = write_sources(out_dir, {"text": 20000, "ocr": 5000, ...}, split="train", seed=0)

OUT/text/text-000000.tar ...         text-only documents (the synthetic pretraining corpus)
OUT/caption/caption-000000.tar ...   a scene of coloured shapes + its caption
OUT/interleaved/...                  sentences with images between them
OUT/ocr/...                          a random string rendered as an image + the string
OUT/synthetic/...                    arithmetic problems rendered as images (short / long traces) and
                                     visual reasoning: count and compare shapes, read a bar chart

Each directory is one source of k15.data.mixture; a user's own shards in the same format
(k15.data.shards) go through the same code. Deterministic by seed; split="heldout" writes documents
that never occur in the train split (the text corpus is train-only).
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Iterator

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from k15.config import SYNTHETIC_SOURCES, WorldConfig
from k15.data.shards import write_shards, write_text_shards
from k15.synthetic.corpus import pretrain_documents, world_levels
from k15.synthetic.images import VisionDoc, vision_docs

SYNTHETIC_MIX = {"problem": 0.5, "count": 0.2, "compare": 0.15, "chart": 0.15}
SOURCES = SYNTHETIC_SOURCES
TEXT_MIX = {"raw": 0.3, "short": 0.2, "long": 0.5}


def synthetic_docs(n: int, split: str, seed: int, heldout_fraction: float, levels: range = range(1, 7)) -> Iterator[VisionDoc]:
    """`n` documents mixing the SYNTHETIC_MIX kinds in a seeded random order (problems of `levels`)."""
    counts = {k: int(n * w) for k, w in SYNTHETIC_MIX.items()}
    counts["problem"] += n - sum(counts.values())
    streams = {k: vision_docs(k, c, split, seed, heldout_fraction=heldout_fraction, **({"levels": levels} if k == "problem" else {}))
               for k, c in counts.items()}
    left = dict(counts)
    rng = random.Random(f"synthetic/{split}/{seed}")
    while any(left.values()):
        kinds = [k for k in left if left[k]]
        kind = rng.choices(kinds, [left[k] for k in kinds])[0]
        left[kind] -= 1
        yield next(streams[kind])


def source_documents(source: str, n: int, split: str, seed: int, world: WorldConfig) -> Iterator:
    if source == "text":
        texts = pretrain_documents(world, n, TEXT_MIX, seed)
        return ((f"text-{seed}-{i:07d}", t) for i, t in enumerate(texts))
    if source == "synthetic":
        return synthetic_docs(n, split, seed, world.heldout_fraction, world_levels(world))
    if source not in SOURCES:
        raise ValueError(f"unknown synthetic source {source!r} (known: {', '.join(SOURCES)})")
    return vision_docs(source, n, split, seed, heldout_fraction=world.heldout_fraction)


def write_sources(out: str | Path, counts: dict[str, int], split: str = "train", seed: int = 0,
                  per_shard: int = 1000, world: WorldConfig | None = None) -> dict[str, list[str]]:
    """Write `counts[source]` documents of each source under OUT/<source>/; returns the shard paths."""
    out, world = Path(out), world or WorldConfig(seed=seed)
    written: dict[str, list[str]] = {}
    columns = (TextColumn("{task.description:<12}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns) as progress:
        for source in SOURCES:
            n = counts.get(source, 0)
            if n <= 0 or (source == "text" and split == "heldout"):
                continue  # held-out problems are for evaluation; the text corpus is train-only
            task = progress.add_task(source, total=n)
            write = write_text_shards if source == "text" else write_shards
            written[source] = write(source_documents(source, n, split, seed, world), out / source / f"{source}-%06d.tar",
                                    per_shard, on_sample=lambda task=task: progress.advance(task))
    return written
