"""Write the synthetic world's vision-language pretraining data as webdataset shards.

    python tools/make_shards.py OUT_DIR [--text 20000] [--caption 5000] [--interleaved 3000] [--ocr 5000]
                                        [--synthetic 10000] [--per-shard 1000] [--split train] [--seed 0]

OUT_DIR/text/text-000000.tar ...         text-only documents (the synthetic pretraining corpus)
OUT_DIR/caption/caption-000000.tar ...   a scene of coloured shapes + its caption
OUT_DIR/interleaved/...                  sentences with images between them
OUT_DIR/ocr/...                          a random string rendered as an image + the string
OUT_DIR/synthetic/...                    arithmetic problems rendered as images (with short / long traces)
                                         and visual reasoning: count and compare shapes, read a bar chart

Each directory is one source of k15.data.mixture (`MixtureConfig(shards={"ocr": "OUT_DIR/ocr", ...},
weights={...})`); a user's own shards in the same format (k15.data.shards) go through the same code. Everything is
deterministic by --seed; `--split heldout` writes documents that never occur in the train split.
"""

from __future__ import annotations

import argparse
import random
from pathlib import Path
from typing import Iterator

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from k15.config import WorldConfig
from k15.data.shards import write_shards, write_text_shards
from k15.synthetic.corpus import pretrain_documents
from k15.synthetic.images import VisionDoc, vision_docs

SYNTHETIC_MIX = {"problem": 0.5, "count": 0.2, "compare": 0.15, "chart": 0.15}
SOURCES = ("text", "caption", "interleaved", "ocr", "synthetic")


def synthetic_docs(n: int, split: str, seed: int, heldout_fraction: float) -> Iterator[VisionDoc]:
    """`n` documents mixing the SYNTHETIC_MIX kinds in a seeded random order."""
    counts = {k: int(n * w) for k, w in SYNTHETIC_MIX.items()}
    counts["problem"] += n - sum(counts.values())
    streams = {k: vision_docs(k, c, split, seed, heldout_fraction=heldout_fraction) for k, c in counts.items()}
    left = dict(counts)
    rng = random.Random(f"synthetic/{split}/{seed}")
    while any(left.values()):
        kinds = [k for k in left if left[k]]
        kind = rng.choices(kinds, [left[k] for k in kinds])[0]
        left[kind] -= 1
        yield next(streams[kind])


def main(argv: list[str] | None = None) -> dict[str, list[str]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    defaults = {"text": 20000, "caption": 5000, "interleaved": 3000, "ocr": 5000, "synthetic": 10000}
    for name, default in defaults.items():
        parser.add_argument(f"--{name}", type=int, default=default, help=f"documents in the {name} source")
    parser.add_argument("--per-shard", type=int, default=1000, help="documents per shard")
    parser.add_argument("--split", choices=("train", "heldout"), default="train")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    world = WorldConfig(seed=args.seed)
    hf = world.heldout_fraction

    def documents(source: str, n: int):
        if source == "text":
            texts = pretrain_documents(world, n, {"raw": 0.3, "short": 0.2, "long": 0.5}, args.seed)
            return ((f"text-{args.seed}-{i:07d}", t) for i, t in enumerate(texts))
        if source == "synthetic":
            return synthetic_docs(n, args.split, args.seed, hf)
        return vision_docs(source, n, args.split, args.seed, heldout_fraction=hf)

    written: dict[str, list[str]] = {}
    columns = (TextColumn("{task.description:<12}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns) as progress:
        for source in SOURCES:
            n = getattr(args, source)
            if n <= 0 or (source == "text" and args.split == "heldout"):
                continue  # the text corpus is train-only: held-out problems are for evaluation
            task = progress.add_task(source, total=n)
            pattern = args.out / source / f"{source}-%06d.tar"
            write = write_text_shards if source == "text" else write_shards
            written[source] = write(documents(source, n), pattern, args.per_shard,
                                    on_sample=lambda task=task: progress.advance(task))
    total = sum(len(v) for v in written.values())
    print(f"wrote {total} shards to {args.out}: " + ", ".join(f"{k} {len(v)}" for k, v in written.items()))
    return written


if __name__ == "__main__":
    main()
