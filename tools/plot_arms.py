"""Overlay the arms' curves of an ablation run:  python tools/plot_arms.py EXPERIMENT_DIR [--stage rl] [--tags a,b]

Reads EXPERIMENT_DIR/<arm>/tb/<stage> TensorBoard logs and writes one PNG with a panel per scalar.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from k15.eval.curves import DEFAULT_TAGS, overlay


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("experiment_dir", type=Path)
    parser.add_argument("--stage", default="rl")
    parser.add_argument("--tags", default=",".join(DEFAULT_TAGS), help="comma-separated scalar names")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    path = overlay(args.experiment_dir, args.out, args.stage, tuple(t for t in args.tags.split(",") if t))
    if path is None:
        print(f"error: no arm of {args.experiment_dir} has {args.stage} TensorBoard logs with those scalars")
        return 2
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
