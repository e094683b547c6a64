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
from pathlib import Path

from k15.config import WorldConfig
from k15.synthetic.shards import SOURCES, write_sources


def main(argv: list[str] | None = None) -> dict[str, list[str]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    defaults = {"text": 20000, "caption": 5000, "interleaved": 3000, "ocr": 5000, "synthetic": 10000}
    for name in SOURCES:
        parser.add_argument(f"--{name}", type=int, default=defaults[name], help=f"documents in the {name} source")
    parser.add_argument("--per-shard", type=int, default=1000, help="documents per shard")
    parser.add_argument("--split", choices=("train", "heldout"), default="train")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    counts = {name: getattr(args, name) for name in SOURCES}
    written = write_sources(args.out, counts, args.split, args.seed, args.per_shard, WorldConfig(seed=args.seed))
    total = sum(len(v) for v in written.values())
    print(f"wrote {total} shards to {args.out}: " + ", ".join(f"{k} {len(v)}" for k, v in written.items()))
    return written


if __name__ == "__main__":
    main()
