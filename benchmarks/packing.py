"""Training tokens/s on variable-length SFT data: packed rows (k15.data.packing) vs padded batches.

Every side trains the same model (fresh copies of one init) on the same examples, batch for batch,
in a rotating order each step so load from other processes hits all alike. Tokens/s counts real
(non-padding) tokens. The sides:

    packed           k15: examples side by side in rows of --row-len, the varlen form (no mask)
    padded_mask      one row per example, right-padded to the batch's longest, with the 2-D padding
                     mask (what a generic collator does)
    padded_causal    the same rows without a padding mask: with right padding and the pads' labels
                     ignored, causal attention alone gives the real tokens the same loss, and SDPA
                     takes its causal kernel; the padded peer at its best
    bucketed         the batch sorted by length and split into --buckets chunks, each padded to its
                     own longest (causal only), gradients accumulated: a length-bucketing collator
                     doing the same work per optimizer step
The packed and padded losses are equal (tests/data/test_packing.py; the script checks all four
sides' first-step losses agree). `--profile` prints where each side's time goes.

    .venv/bin/python benchmarks/packing.py [--batch 128] [--steps 24] [--threads 2] [--buckets 4]

The last line is `packing ratio=X.XX`: packed over the best padded side (padded_causal or bucketed).
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


def padded(batch, pad_id, mask: bool = True):
    width = max(len(ids) for ids, _ in batch)
    ids = torch.full((len(batch), width), pad_id)
    labels = torch.full((len(batch), width), IGNORE)
    attention = torch.zeros((len(batch), width), dtype=torch.long)
    for r, (i, lab) in enumerate(batch):
        ids[r, : len(i)], labels[r, : len(i)], attention[r, : len(i)] = torch.tensor(i), torch.tensor(lab), 1
    labels[:, 0] = IGNORE  # as packing does: an example's first token is never a target
    inputs = {"input_ids": ids, "labels": labels, "use_cache": False}
    if mask:
        inputs["attention_mask"] = attention
    return inputs


def bucketed(batch, pad_id, buckets: int):
    """Chunks of similar length, each with its share of the batch's target tokens (for accumulation)."""
    ordered = sorted(batch, key=lambda ex: len(ex[0]))
    size = -(-len(ordered) // buckets)
    chunks = [ordered[i : i + size] for i in range(0, len(ordered), size)]
    targets = [sum(sum(t != IGNORE for t in lab[1:]) for _, lab in chunk) for chunk in chunks]
    total = sum(targets)
    return [(padded(chunk, pad_id, mask=False), n / total) for chunk, n in zip(chunks, targets)]


def step_seconds(model, opt, inputs) -> tuple[float, float]:
    """(seconds, loss) of one optimizer step; `inputs` is one batch or [(chunk, weight), ...] to accumulate."""
    start = time.perf_counter()
    parts = inputs if isinstance(inputs, list) else [(inputs, 1.0)]
    loss = 0.0
    for chunk, weight in parts:
        part = model(**chunk).loss * weight
        part.backward()
        loss += float(part)
    opt.step()
    opt.zero_grad(set_to_none=True)
    return time.perf_counter() - start, loss


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--steps", type=int, default=24)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--row-len", type=int, default=128)
    parser.add_argument("--buckets", type=int, default=4)
    parser.add_argument("--profile", action="store_true", help="torch.profiler's top ops per side (one step each)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    tok = build_synthetic_tokenizer()
    examples = [RAW.example(tok, p, r) for p, r in sft_examples(WorldConfig(), args.batch * args.steps, 0.5, seed=0)]
    batches = [examples[i : i + args.batch] for i in range(0, len(examples), args.batch)]
    tokens = [sum(len(ids) for ids, _ in b) for b in batches]
    base = build_decoder(ModelConfig(), tok)
    pad = tok.pad_token_id
    make = {
        "packed": lambda b: model_inputs(pack_examples(b, args.row_len, pad)),
        "padded_mask": lambda b: padded(b, pad),
        "padded_causal": lambda b: padded(b, pad, mask=False),
        "bucketed": lambda b: bucketed(b, pad, args.buckets),
    }
    runs = {k: copy.deepcopy(base) for k in make}
    opts = {k: torch.optim.AdamW(m.parameters(), 1e-3) for k, m in runs.items()}
    if args.profile:
        profile(runs, make, batches[0])
    rates = {k: [] for k in make}
    names = list(make)
    for i, (batch, n) in enumerate(zip(batches, tokens)):
        order = names[i % len(names):] + names[: i % len(names)]  # each side goes first equally often
        now, losses = {}, {}
        for name in order:
            seconds, losses[name] = step_seconds(runs[name], opts[name], make[name](batch))
            now[name] = n / seconds
            if i > 0:  # the first step of each warms up allocator and kernels
                rates[name].append(now[name])
        if i == 0:  # same init, same batch: the same loss on every side
            spread = max(losses.values()) - min(losses.values())
            print(f"first-step losses {', '.join(f'{k} {v:.6f}' for k, v in losses.items())} (spread {spread:.1e})")
            assert spread < 1e-4, losses
        print(f"step {i + 1}/{len(batches)}: " + ", ".join(f"{k} {now[k]:.0f}" for k in names) + " tok/s", flush=True)
    packed_rows = statistics.mean(len(model_inputs(pack_examples(b, args.row_len, pad))["input_ids"]) for b in batches)
    padded_width = statistics.mean(max(len(ids) for ids, _ in b) for b in batches)
    mean_len = statistics.mean(len(ids) for ids, _ in examples)
    print(f"examples: mean {mean_len:.1f} tokens; padded batches {padded_width:.1f} wide ({1 - mean_len / padded_width:.0%} "
          f"padding); packed into {packed_rows:.1f} rows of {args.row_len} ({1 - mean_len * args.batch / (packed_rows * args.row_len):.0%} padding)")
    for name in names:
        r = rates[name]
        print(f"{name}: median {statistics.median(r):.0f} tok/s (min {min(r):.0f}, max {max(r):.0f}, {len(r)} steps)")
    best = max(("padded_causal", "bucketed"), key=lambda k: statistics.median(rates[k]))
    for name in ("padded_mask", "padded_causal", "bucketed"):
        print(f"packed / {name} = {statistics.median(rates['packed']) / statistics.median(rates[name]):.2f}")
    print(f"packing ratio={statistics.median(rates['packed']) / statistics.median(rates[best]):.2f}")


def profile(runs, make, batch) -> None:
    from torch.profiler import ProfilerActivity, profile as torch_profile

    for name, model in runs.items():
        inputs = make[name](batch)
        step_seconds(model, torch.optim.SGD(model.parameters(), 0.0), inputs)  # warm-up, no change to weights
        with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
            step_seconds(model, torch.optim.SGD(model.parameters(), 0.0), inputs)
        print(f"---- {name}")
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=8))


if __name__ == "__main__":
    main()
