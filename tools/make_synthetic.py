"""Write the synthetic world to files, in the formats k15 reads from users.

    python tools/make_synthetic.py OUT_DIR [--prompts 4096] [--sft 30000] [--pretrain 60000] [--seed 0]

OUT_DIR/tokenizer/       the synthetic tokenizer, Hugging Face format   (model.tokenizer=...)
OUT_DIR/prompts.jsonl    RL prompt set: id, prompt, answer, difficulty, domain  (rl.prompt_path=...)
OUT_DIR/heldout.jsonl    the held-out evaluation problems, same schema
OUT_DIR/sft.jsonl        SFT pairs {"prompt", "response"}               (sft.data_path=...)
OUT_DIR/pretrain.txt     pretraining documents, one per line           (pretrain.data_path=...)

Injected-error pieces of long traces are written as plain text in sft.jsonl (a JSONL row has no
per-piece loss mask), so training from this file also trains on the wrong digits; the built-in
synthetic SFT data masks them.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from rich.progress import track

from k15.config import WorldConfig
from k15.data.prompts import PromptRecord, synthetic_prompt_set, write_prompt_set
from k15.synthetic.arithmetic import heldout_set
from k15.synthetic.corpus import pretrain_documents, sft_examples, world_levels
from k15.synthetic.traces import text_of
from k15.tokenizer import build_synthetic_tokenizer


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--prompts", type=int, default=4096)
    parser.add_argument("--sft", type=int, default=30000)
    parser.add_argument("--pretrain", type=int, default=60000)
    parser.add_argument("--heldout-per-level", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    world = WorldConfig(seed=args.seed)
    args.out.mkdir(parents=True, exist_ok=True)

    steps = ["tokenizer", "prompts", "heldout", "sft", "pretrain"]
    for step in track(steps, description="writing the synthetic world"):
        if step == "tokenizer":
            build_synthetic_tokenizer().save_pretrained(args.out / "tokenizer")
        elif step == "prompts":
            write_prompt_set(synthetic_prompt_set(world, args.prompts, args.seed), args.out / "prompts.jsonl")
        elif step == "heldout":
            problems = heldout_set(world_levels(world), args.heldout_per_level, world.heldout_fraction, world.seed)
            records = [PromptRecord(p.id, p.prompt, p.answer, p.level, "arithmetic") for p in problems]
            write_prompt_set(records, args.out / "heldout.jsonl")
        elif step == "sft":
            with (args.out / "sft.jsonl").open("w") as f:
                for prompt, pieces in sft_examples(world, args.sft, 0.5, args.seed):
                    f.write(json.dumps({"prompt": prompt, "response": text_of(pieces)}) + "\n")
        elif step == "pretrain":
            docs = pretrain_documents(world, args.pretrain, {"raw": 0.3, "short": 0.2, "long": 0.5}, args.seed)
            (args.out / "pretrain.txt").write_text("\n".join(docs) + "\n")
    print(f"wrote {', '.join(sorted(p.name for p in args.out.iterdir()))} to {args.out}")


if __name__ == "__main__":
    main()
