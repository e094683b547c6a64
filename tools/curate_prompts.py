"""Curate an RL prompt set with a model:  python tools/curate_prompts.py --prompts IN.jsonl --model DIR --out OUT.jsonl

Removes duplicates and hack-prone types (multiple choice, true/false, proof), tags missing domains,
drops prompts the model answers correctly without chain of thought within 8 tries, and writes the
rest with `pass_rate` (over 10 samples at temperature 1.2) as its difficulty estimate. Prints how
many prompts each filter removed. The filters are in k15/curation/curate.py.

    [--tokenizer DIR] [--samples 10] [--temperature 1.2] [--no-cot-tries 8] [--no-cot-temperature 1.2]
    [--max-pass-rate P] [--max-new-tokens 64] [--no-cot-max-new-tokens 8] [--batch-size 64] [--seed 0]
    [--threads N]
    Your own set and model: [--prompt-field problem] [--answer-field solution] [--answer-from boxed] [--difficulty-field level]
    [--chat-template model|FILE] [--system-prompt TEXT] (the `data.*` keys of the same names; IN may be
    JSONL, Parquet or a `datasets` directory). The output is JSONL in k15's own field names.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--prompts", required=True, type=Path, help="prompt set to curate (JSONL, Parquet, datasets dir)")
    p.add_argument("--model", required=True, help="model checkpoint directory (Hugging Face format)")
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--tokenizer", default=None, help="tokenizer directory (default: the model's)")
    p.add_argument("--samples", type=int, default=10, help="samples per prompt for the pass rate")
    p.add_argument("--temperature", type=float, default=1.2)
    p.add_argument("--no-cot-tries", type=int, default=8)
    p.add_argument("--no-cot-temperature", type=float, default=1.2)
    p.add_argument("--max-pass-rate", type=float, default=None, help="also drop prompts solved more often than this")
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--no-cot-max-new-tokens", type=int, default=8)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--prompt-field", default="prompt")
    p.add_argument("--answer-field", default="answer")
    p.add_argument("--answer-from", default="none", help="none | gsm8k | boxed")
    p.add_argument("--difficulty-field", default="difficulty")
    p.add_argument("--chat-template", default="none", help="none | model | a Jinja file")
    p.add_argument("--system-prompt", default=None)
    args = p.parse_args(argv)

    import torch

    from k15.chat import chat_format
    from k15.config import ModelConfig
    from k15.curation.curate import FILTERS, CurationConfig, curate
    from k15.curation.sampling import ModelSampler
    from k15.data.prompts import FieldMap, read_prompt_set, write_prompt_set
    from k15.errors import K15Error
    from k15.models.decoder import load_model_and_tokenizer
    from k15.quiet import quiet_libraries
    from k15.rewards.registry import RewardRegistry

    quiet_libraries()
    if args.threads:
        torch.set_num_threads(args.threads)
    console = Console(width=120)
    try:
        cfg = CurationConfig(
            samples=args.samples, temperature=args.temperature, no_cot_tries=args.no_cot_tries,
            no_cot_temperature=args.no_cot_temperature, max_pass_rate=args.max_pass_rate,
            max_new_tokens=args.max_new_tokens, no_cot_max_new_tokens=args.no_cot_max_new_tokens,
            batch_size=args.batch_size, seed=args.seed,
        )
        fields = FieldMap(prompt=args.prompt_field, answer=args.answer_field, answer_from=args.answer_from,
                          difficulty=args.difficulty_field)
        records = read_prompt_set(args.prompts, fields, "--prompts")
        model, tok = load_model_and_tokenizer(ModelConfig(tokenizer=args.tokenizer), args.model)
        chat = chat_format(args.chat_template, args.system_prompt, tok)
        torch.manual_seed(args.seed)
        sampler = ModelSampler(model, tok, cfg.max_new_tokens, cfg.no_cot_max_new_tokens, cfg.batch_size, cfg.seed, chat)
        with RewardRegistry() as registry, console.status("curating") as status:
            kept, report = curate(records, sampler, registry, cfg, lambda stage: status.update(stage))
        write_prompt_set(kept, args.out)
    except K15Error as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    table = Table("filter", "removed")
    for name in FILTERS:
        table.add_row(name, str(report.removed[name]))
    console.print(table)
    domains = ", ".join(f"{d} {n}" for d, n in sorted(report.domains.items()))
    rates = [r.pass_rate for r in kept]
    mean_rate = f"{sum(rates) / len(rates):.3f}" if rates else "-"
    console.print(f"kept {report.kept} of {report.total} prompts "
                  f"(domains: {domains or '-'}; mean pass rate {mean_rate})")
    console.print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
