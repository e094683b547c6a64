"""Rollout throughput: our RolloutEngine against HF `generate()` on the same model, batch and lengths.

Both run in one process, alternating A/B repetitions, so load from other jobs on a shared machine
hits both alike. Greedy decoding with no stop token, so both produce exactly the same number of
tokens; the script checks the outputs are identical. The last line printed is `rollout ratio=X.XX`
(our tokens/s over HF's, median over repetitions).

    python benchmarks/rollout.py [--batch 64] [--new-tokens 64] [--prompt-len 12] [--repeats 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
from collections import Counter
import sys
import time

# glibc malloc returns large freed blocks to the OS and re-faults them on the next step, which costs
# HF generate ~35% on CPU (calibration note). The thresholds are read once at process start, so set
# them by re-executing this script; both engines then run under the same allocator settings.
_MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": "33554432", "MALLOC_TRIM_THRESHOLD_": "1073741824"}
# Opt-in: GNU OpenMP's default busy-wait makes every parallel op stall for a scheduler slice when
# another process holds one of the cores (we measured 50-70x slowdowns at 2 threads on 2 shared
# cores). Passive waiting keeps the numbers meaningful under load; it applies to both engines.
_PASSIVE_OMP = {"OMP_WAIT_POLICY": "PASSIVE"} if "--passive-omp" in sys.argv else {}
_WANTED_ENV = {**_MALLOC_ENV, **_PASSIVE_OMP}
if any(os.environ.get(k) != v for k, v in _WANTED_ENV.items()):
    print(f"re-executing with {' '.join(f'{k}={v}' for k, v in _WANTED_ENV.items())}", flush=True)
    os.execve(sys.executable, [sys.executable, *sys.argv], {**os.environ, **_WANTED_ENV})

import torch  # noqa: E402
from transformers import LlamaConfig, LlamaForCausalLM  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from k15.rollout.engine import RolloutEngine, SamplingParams  # noqa: E402


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--prompt-len", type=int, default=12)
    p.add_argument("--new-tokens", type=int, default=64)
    p.add_argument("--repeats", type=int, default=5, help="timed A/B pairs (after one warm-up pair)")
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--kv-heads", type=int, default=None, help="default: same as --heads")
    p.add_argument("--intermediate", type=int, default=512)
    p.add_argument("--vocab", type=int, default=40)
    p.add_argument("--context", type=int, default=128, help="max_position_embeddings and engine max_seq_len")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--stop-token", default=None,
                   help="an id, or 'auto' (the id found in most rows of a greedy pass): rows then finish at "
                        "different steps, as in RL; ours drops finished rows from the batch, HF keeps them")
    p.add_argument("--passive-omp", action="store_true", help="run with OMP_WAIT_POLICY=PASSIVE (see above)")
    return p.parse_args()


def cpu_idle_fraction(seconds: float = 1.0) -> float | None:
    """Share of all CPUs idle over a short window (Linux /proc/stat), to record how busy the box was."""
    def sample() -> tuple[int, int]:
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
        return fields[3] + fields[4], sum(fields)  # idle + iowait, total

    try:
        idle0, total0 = sample()
        time.sleep(seconds)
        idle1, total1 = sample()
    except OSError:
        return None
    return (idle1 - idle0) / max(total1 - total0, 1)


def describe_load() -> str:
    idle = cpu_idle_fraction()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return f"cpu idle {idle:.0%} (before our work), loadavg(1m) {load:.2f}" if idle is not None else "load unknown"


def main() -> None:
    args = parse_args()
    print(f"machine: {os.cpu_count()} cpus, {describe_load()}, OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'unset')}")
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    config = LlamaConfig(
        vocab_size=args.vocab,
        hidden_size=args.hidden,
        intermediate_size=args.intermediate,
        num_hidden_layers=args.layers,
        num_attention_heads=args.heads,
        num_key_value_heads=args.kv_heads or args.heads,
        max_position_embeddings=args.context,
        bos_token_id=None,
        eos_token_id=None,  # no early stop: both sides generate exactly --new-tokens tokens
        pad_token_id=0,
    )
    model = LlamaForCausalLM(config).eval()
    model.generation_config.eos_token_id = None
    model.generation_config.bos_token_id = None
    prompts = torch.randint(1, args.vocab, (args.batch, args.prompt_len))
    n_tokens = args.batch * args.new_tokens
    print(
        f"model: llama hidden={args.hidden} layers={args.layers} heads={args.heads} "
        f"kv_heads={config.num_key_value_heads} intermediate={args.intermediate} vocab={args.vocab} | "
        f"batch={args.batch} prompt_len={args.prompt_len} new_tokens={args.new_tokens} threads={args.threads}",
        flush=True,
    )

    engine = RolloutEngine(model, max_batch_size=args.batch, max_seq_len=args.context)
    print(f"engine weight load: {engine.load_weights(model) * 1e3:.2f} ms", flush=True)
    params = SamplingParams(max_new_tokens=args.new_tokens, temperature=0.0)
    stop = None
    if args.stop_token is not None:
        if args.stop_token == "auto":
            free = engine.generate(prompts.tolist(), params).tokens
            stop = Counter(t for row in free for t in set(row)).most_common(1)[0][0]
        else:
            stop = int(args.stop_token)
        params = SamplingParams(max_new_tokens=args.new_tokens, temperature=0.0, stop_token_ids=(stop,))

    def run_ours() -> list[list[int]]:
        return engine.generate(prompts.tolist(), params).tokens

    def cut(row: list[int]) -> list[int]:  # HF pads a finished row; keep up to its stop token, like ours
        return row[: row.index(stop) + 1] if stop is not None and stop in row else row

    def run_hf() -> list[list[int]]:
        with torch.no_grad():
            out = model.generate(
                prompts,
                attention_mask=torch.ones_like(prompts),
                do_sample=False,
                max_new_tokens=args.new_tokens,
                pad_token_id=0,
                eos_token_id=stop,
            )
        return [cut(row) for row in out[:, args.prompt_len :].tolist()]

    if stop is not None:
        n_tokens = sum(len(t) for t in run_ours())
        print(f"stop token {stop}: {n_tokens} tokens in all, {n_tokens / args.batch:.1f} per row "
              f"(of at most {args.new_tokens})", flush=True)

    rates: dict[str, list[float]] = {"ours": [], "hf": []}
    outputs: dict[str, list[list[int]]] = {}
    for rep in range(args.repeats + 1):  # repetition 0 is warm-up, not timed
        # Alternate which side goes first so a load change inside a pair does not favour one side.
        pair = [("ours", run_ours), ("hf", run_hf)]
        for name, fn in pair if rep % 2 == 0 else pair[::-1]:
            start = time.perf_counter()
            outputs[name] = fn()
            seconds = time.perf_counter() - start
            if rep > 0:
                rates[name].append(n_tokens / seconds)
            tag = "warm-up" if rep == 0 else f"rep {rep}/{args.repeats}"
            print(f"  {tag:>9} {name:>4}: {seconds * 1e3:8.1f} ms  {n_tokens / seconds:9.0f} tok/s", flush=True)
        assert stop is not None or all(len(t) == args.new_tokens for t in outputs["hf"]), "HF stopped early"

    same = outputs["ours"] == outputs["hf"]
    print(f"greedy outputs identical: {same}")
    if not same:
        diff = sum(a != b for a, b in zip(outputs["ours"], outputs["hf"]))
        print(f"  {diff}/{args.batch} sequences differ")
    ratios = [o / h for o, h in zip(rates["ours"], rates["hf"])]
    for name in ("ours", "hf"):
        r = rates[name]
        print(f"{name:>4} tok/s: median {statistics.median(r):.0f}  min {min(r):.0f}  max {max(r):.0f}")
    print(f"per-pair ratio: min {min(ratios):.2f}  median {statistics.median(ratios):.2f}  max {max(ratios):.2f}")
    print(f"after the run: loadavg(1m) {os.getloadavg()[0]:.2f}")
    print(f"rollout ratio={statistics.median(rates['ours']) / statistics.median(rates['hf']):.2f}")


if __name__ == "__main__":
    main()
