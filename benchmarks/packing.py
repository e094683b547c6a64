"""Training tokens/s on variable-length SFT data: packed rows (k15.data.packing) vs padded batches.

Both paths train the same model (fresh copies of one init) on the same examples, batch for batch,
alternating A/B each repeat so load from other processes hits both alike. Tokens/s counts real
(non-padding) tokens. The packed loss equals the padded loss (tests/data/test_packing.py), so this
measures speed only.

    .venv/bin/python benchmarks/packing.py [--batch 128] [--steps 8] [--threads 2]

The last line is `packing ratio=X.XX` (packed tokens/s over padded tokens/s).
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch

from k15.config import ModelConfig, WorldConfig
from k15.data.packing import IGNORE, model_inputs, pack_examples
from k15.chat import RAW
from k15.models.decoder import build_decoder
from k15.synthetic.corpus import sft_examples
from k15.tokenizer import build_synthetic_tokenizer


def padded(batch, pad_id):
    width = max(len(ids) for ids, _ in batch)
    ids = torch.full((len(batch), width), pad_id)
    labels = torch.full((len(batch), width), IGNORE)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for r, (i, lab) in enumerate(batch):
        ids[r, : len(i)], labels[r, : len(i)], mask[r, : len(i)] = torch.tensor(i), torch.tensor(lab), 1
    return {"input_ids": ids, "labels": labels, "attention_mask": mask}


def step_seconds(model, opt, inputs) -> float:
    start = time.perf_counter()
    model(**inputs).loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--row-len", type=int, default=128)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    tok = build_synthetic_tokenizer()
    examples = [RAW.example(tok, p, r) for p, r in sft_examples(WorldConfig(), args.batch * args.steps, 0.5, seed=0)]
    batches = [examples[i : i + args.batch] for i in range(0, len(examples), args.batch)]
    tokens = [sum(len(ids) for ids, _ in b) for b in batches]
    base = build_decoder(ModelConfig(), tok)
    runs = {"packed": copy.deepcopy(base), "padded": copy.deepcopy(base)}
    opts = {k: torch.optim.AdamW(m.parameters(), 1e-3) for k, m in runs.items()}
    make = {
        "packed": lambda b: model_inputs(pack_examples(b, args.row_len, tok.pad_token_id)),
        "padded": lambda b: padded(b, tok.pad_token_id),
    }
    rates = {"packed": [], "padded": []}
    for i, (batch, n) in enumerate(zip(batches, tokens)):
        order = ["packed", "padded"] if i % 2 == 0 else ["padded", "packed"]
        now = {}
        for name in order:
            now[name] = n / step_seconds(runs[name], opts[name], make[name](batch))
            if i > 0:  # the first step of each warms up allocator and kernels
                rates[name].append(now[name])
        print(f"step {i + 1}/{len(batches)}: packed {now['packed']:.0f} tok/s, padded {now['padded']:.0f} tok/s", flush=True)
    padded_width = statistics.mean(max(len(ids) for ids, _ in b) for b in batches)
    mean_len = statistics.mean(len(ids) for ids, _ in examples)
    print(f"examples: mean {mean_len:.1f} tokens, padded batches {padded_width:.1f} wide (padding {1 - mean_len / padded_width:.0%})")
    for name in rates:
        print(f"{name}: median {statistics.median(rates[name]):.0f} tok/s (min {min(rates[name]):.0f}, max {max(rates[name]):.0f})")
    print(f"packing ratio={statistics.median(rates['packed']) / statistics.median(rates['padded']):.2f}")


if __name__ == "__main__":
    main()
