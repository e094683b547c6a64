"""A/B of one RolloutEngine variant against the engine as it is, in one process, alternating.

    python benchmarks/rollout_variants.py --variant compact     # compact_below 0.75 (now) vs 0.5, with a stop token
    python benchmarks/rollout_variants.py --variant sdpa_decode # SDPA for the one-query decode step
    python benchmarks/rollout_variants.py --variant compile     # torch.compile(dynamic=True) of the decode forward

Tiny random Llama (as benchmarks/rollout.py), greedy, 1 thread by default; checks both sides give
identical tokens. The last line is `rollout_variants ratio=X.XX` (variant speed over baseline's).
"""

from __future__ import annotations

import os
import sys

_MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": "33554432", "MALLOC_TRIM_THRESHOLD_": "1073741824"}
if any(os.environ.get(k) != v for k, v in _MALLOC_ENV.items()):
    os.execve(sys.executable, [sys.executable, *sys.argv], {**os.environ, **_MALLOC_ENV})

import argparse  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
from collections import Counter  # noqa: E402

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from transformers import LlamaConfig, LlamaForCausalLM  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from k15.rollout.engine import RolloutEngine, SamplingParams  # noqa: E402


class SdpaDecode(RolloutEngine):
    def _attend(self, q, k, v, mask, causal):
        n, T, nq, D = q.shape
        if T > 1 or mask is not None:
            return super()._attend(q, k, v, mask, causal)
        out = F.scaled_dot_product_attention(q.transpose(1, 2), k, v, scale=self.scale, enable_gqa=nq != k.shape[1])
        return out.reshape(n, nq * D)


def compiled(engine: RolloutEngine) -> RolloutEngine:
    eager = engine._forward
    fast = torch.compile(eager, dynamic=True)
    engine._forward = lambda x, rope, start, mask, causal: (fast if x.shape[1] == 1 else eager)(x, rope, start, mask, causal)
    return engine


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--variant", choices=["compact", "sdpa_decode", "compile"], required=True)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--new-tokens", type=int, default=64)
    p.add_argument("--repeats", type=int, default=8)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=40, hidden_size=128, intermediate_size=512, num_hidden_layers=4, num_attention_heads=4,
                      num_key_value_heads=4, max_position_embeddings=128, initializer_range=0.1,
                      bos_token_id=None, eos_token_id=None)
    model = LlamaForCausalLM(cfg).eval()
    prompts = torch.randint(1, 40, (args.batch, 12)).tolist()
    base = RolloutEngine(model, args.batch, 128)
    params = SamplingParams(max_new_tokens=args.new_tokens, temperature=0.0)
    if args.variant == "compact":  # rows must finish at different steps for compaction to matter
        free = base.generate(prompts, params).tokens
        stop = Counter(t for row in free for t in set(row)).most_common(1)[0][0]
        params = SamplingParams(max_new_tokens=args.new_tokens, temperature=0.0, stop_token_ids=(stop,))
        base.compact_below = 0.5
        variant = RolloutEngine(model, args.batch, 128)
        print(f"variant: compact_below {variant.compact_below} vs baseline 0.5, stop token {stop}")
    elif args.variant == "sdpa_decode":
        variant = SdpaDecode(model, args.batch, 128)
    else:
        variant = compiled(RolloutEngine(model, args.batch, 128))
    start = time.perf_counter()
    out_v = variant.generate(prompts, params).tokens
    print(f"variant's first call: {time.perf_counter() - start:.2f} s (compilation, if any)")
    out_b = base.generate(prompts, params).tokens
    lengths = [len(t) for t in out_b]
    print(f"identical tokens: {out_v == out_b} | batch {args.batch}, mean {statistics.mean(lengths):.1f} tokens per row")
    times: dict[str, list[float]] = {"baseline": [], "variant": []}
    for rep in range(args.repeats):
        pair = [("baseline", base), ("variant", variant)]
        for name, engine in pair if rep % 2 == 0 else pair[::-1]:
            start = time.perf_counter()
            engine.generate(prompts, params)
            times[name].append(time.perf_counter() - start)
    for name, t in times.items():
        print(f"{name:>8}: median {statistics.median(t) * 1e3:.0f} ms (min {min(t) * 1e3:.0f}, max {max(t) * 1e3:.0f})")
    print(f"loadavg(1m) {os.getloadavg()[0]:.2f}")
    print(f"rollout_variants ratio={statistics.median(times['baseline']) / statistics.median(times['variant']):.2f}")


if __name__ == "__main__":
    main()
