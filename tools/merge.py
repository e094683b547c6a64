"""Average two checkpoints of one architecture:  python tools/merge.py A_DIR B_DIR OUT_DIR [--weight 0.5]

OUT = weight * A + (1 - weight) * B, with A's tokenizer. Mismatched architectures or shapes are
refused with an error naming the first differing tensor; OUT must not hold anything yet.
"""

from __future__ import annotations

import argparse
import sys

from k15.errors import K15Error
from k15.long2short.merge import merge_checkpoints


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("a")
    parser.add_argument("b")
    parser.add_argument("out")
    parser.add_argument("--weight", type=float, default=0.5, help="weight of A (default 0.5: plain average)")
    args = parser.parse_args(argv)
    try:
        path = merge_checkpoints(args.a, args.b, args.out, args.weight)
    except K15Error as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"merged model written to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
