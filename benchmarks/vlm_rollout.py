"""Image-prompt rollout throughput: our VisionRolloutEngine against HF `generate()` on a Qwen2.5-VL (M-RoPE).

Steps:
1. Build a small random Qwen2.5-VL (hidden 256, 4 layers by default), save it and load it back with
   k15.models.hf_vlm.load_hf_vlm (sdpa attention), as a real checkpoint would be.
2. Make a batch of prompts with 0-2 images of a few sizes each (different lengths, so rows are padded).
3. Greedy, no stop token: both sides make exactly --new-tokens per row. The HF side is the wrapper's
   `generate` (left padding, HF's KV cache, the checkpoint's own M-RoPE deltas) with the `<image>`
   token suppressed, which the engine never samples either. The outputs must be identical, else exit 1.
4. Time both in alternating order after a warm-up pair (load from other jobs hits both alike), report
   the medians. The last line is `vlm_rollout ratio=X.XX`: HF's median seconds over ours.

Both timings include the image tower (each side runs it inside its generate call).
`--samples-per-prompt k` repeats each prompt k times, as RL does: the engine then encodes each prompt's
images once, HF's generate k times.

    python benchmarks/vlm_rollout.py [--batch 16] [--new-tokens 64] [--repeats 5] [--samples-per-prompt 1]
                                     [--threads 2] [--passive-omp]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

# As in benchmarks/rollout.py: keep glibc from returning (and re-faulting) large freed blocks, which
# costs HF generate a lot on CPU, and (--passive-omp) stop OpenMP threads from busy-waiting, which
# stalls every parallel op when another process holds a core. Both are read at process start, so
# re-execute once; both sides then run under the same settings.
_WANTED_ENV = {"MALLOC_MMAP_THRESHOLD_": "33554432", "MALLOC_TRIM_THRESHOLD_": "1073741824"}
if "--passive-omp" in sys.argv:
    _WANTED_ENV["OMP_WAIT_POLICY"] = "PASSIVE"
if any(os.environ.get(k) != v for k, v in _WANTED_ENV.items()):
    print(f"re-executing with {' '.join(f'{k}={v}' for k, v in _WANTED_ENV.items())}", flush=True)
    os.execve(sys.executable, [sys.executable, *sys.argv], {**os.environ, **_WANTED_ENV})

import torch  # noqa: E402
from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from k15.models.hf_vlm import load_hf_vlm  # noqa: E402
from k15.models.vlm import expand_placeholders  # noqa: E402
from k15.rollout.vision import ImagePrompt, VisionRolloutEngine  # noqa: E402
from k15.rollout.sampling import SamplingParams  # noqa: E402

IMG, VIDEO, START, END = 8, 9, 10, 11  # image / video placeholders, vision start / end
SIZES = [(32, 32), (32, 64), (64, 32), (48, 48), (64, 64)]  # pixels; 8-px patches, 2x2 merge: 4 to 16 tokens


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=int, default=16, help="rows in all (distinct prompts x samples per prompt)")
    p.add_argument("--samples-per-prompt", type=int, default=1)
    p.add_argument("--new-tokens", type=int, default=64)
    p.add_argument("--repeats", type=int, default=5, help="timed A/B pairs (after one warm-up pair)")
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--kv-heads", type=int, default=2)
    p.add_argument("--intermediate", type=int, default=1024)
    p.add_argument("--vocab", type=int, default=256)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--passive-omp", action="store_true", help="run with OMP_WAIT_POLICY=PASSIVE (see above)")
    return p.parse_args()


def describe_load() -> str:
    """How busy the machine was just before we started (share of idle CPU over one second, /proc/stat)."""
    def sample() -> tuple[int, int]:
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
        return fields[3] + fields[4], sum(fields)

    try:
        idle0, total0 = sample()
        time.sleep(1.0)
        idle1, total1 = sample()
    except OSError:
        return "load unknown"
    return f"cpu idle {(idle1 - idle0) / max(total1 - total0, 1):.0%}, loadavg(1m) {os.getloadavg()[0]:.2f}"


def build_model(args: argparse.Namespace, path: str):
    """A random Qwen2.5-VL saved to `path` and loaded back through k15's loader (sdpa)."""
    torch.manual_seed(args.seed)
    half = args.hidden // args.heads // 2
    section = [half // 4, (half - half // 4) // 2]
    section.append(half - sum(section))  # t gets a quarter of the frequencies, h and w the rest, as in Qwen
    text = dict(vocab_size=args.vocab, hidden_size=args.hidden, intermediate_size=args.intermediate,
                num_hidden_layers=args.layers, num_attention_heads=args.heads, num_key_value_heads=args.kv_heads,
                max_position_embeddings=512, bos_token_id=1, eos_token_id=None, pad_token_id=0,
                # at HF's default 0.02 attention is near uniform and greedy tokens ignore positions, so the
                # identity check below could not tell M-RoPE from 1-D positions (tests/vision/test_mrope_rollout.py)
                initializer_range=0.1,
                rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": section})
    vision = dict(depth=2, hidden_size=64, out_hidden_size=args.hidden, intermediate_size=128, num_heads=2,
                  patch_size=8, spatial_merge_size=2, temporal_patch_size=2, window_size=32, fullatt_block_indexes=[1])
    config = Qwen2_5_VLConfig(text_config=text, vision_config=vision, image_token_id=IMG, video_token_id=VIDEO,
                              vision_start_token_id=START, vision_end_token_id=END)
    Qwen2_5_VLForConditionalGeneration(config).save_pretrained(path)
    vlm = load_hf_vlm(path).eval()
    gen = vlm.model.generation_config
    gen.eos_token_id = None  # no early stop: both sides make exactly --new-tokens tokens
    gen.suppress_tokens = [IMG]  # the engine never samples a placeholder; make HF's distribution the same
    return vlm, section


def make_prompts(vlm, args: argparse.Namespace) -> list[ImagePrompt]:
    """Distinct prompts with 0, 1 or 2 images, each repeated --samples-per-prompt times (the same object)."""
    g = torch.Generator().manual_seed(args.seed + 1)
    distinct = []
    for i in range(max(args.batch // args.samples_per_prompt, 1)):
        images = []
        for j in range(i % 3):
            h, w = SIZES[(i + 2 * j) % len(SIZES)]
            images.append(torch.randn(3, h, w, generator=g))
        ids = [1] + torch.randint(12, args.vocab, (3 + i % 5,), generator=g).tolist()
        for img in images:
            ids += [START, IMG, END] + torch.randint(12, args.vocab, (2,), generator=g).tolist()
        counts = [vlm.tokens_per_image(*img.shape[-2:]) for img in images]
        distinct.append(ImagePrompt(expand_placeholders(ids, IMG, counts), images, expanded=True))
    return [p for p in distinct for _ in range(args.samples_per_prompt)]


def main() -> None:
    args = parse_args()
    print(f"machine: {os.cpu_count()} cpus, {describe_load()} (before our work), "
          f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'unset')}", flush=True)
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        vlm, section = build_model(args, tmp)
    prompts = make_prompts(vlm, args)
    lengths = [len(p.ids) for p in prompts]
    print(f"model: qwen2_5_vl hidden={args.hidden} layers={args.layers} heads={args.heads} kv_heads={args.kv_heads} "
          f"intermediate={args.intermediate} vocab={args.vocab} mrope_section={section} | batch={len(prompts)} "
          f"({args.samples_per_prompt} per prompt) images={sum(len(p.images) for p in prompts)} "
          f"prompt_len={min(lengths)}-{max(lengths)} new_tokens={args.new_tokens} threads={args.threads}", flush=True)

    engine = VisionRolloutEngine(vlm, max_batch_size=len(prompts), max_seq_len=max(lengths) + args.new_tokens)
    print(f"engine weight load: {engine.load_weights(vlm) * 1e3:.2f} ms", flush=True)
    params = SamplingParams(max_new_tokens=args.new_tokens, temperature=0.0)

    def run_ours() -> list[list[int]]:
        return engine.generate(prompts, params).tokens

    def run_hf() -> list[list[int]]:
        return vlm.generate([p.ids for p in prompts], [p.images for p in prompts], max_new_tokens=args.new_tokens,
                            stop_token_ids=[])

    ours, theirs = run_ours(), run_hf()
    if ours != theirs or any(len(t) != args.new_tokens for t in ours):
        differ = sum(a != b for a, b in zip(ours, theirs))
        sys.exit(f"FAIL: greedy outputs differ in {differ}/{len(prompts)} rows (or a row is short); nothing timed")
    print(f"greedy outputs identical: {len(prompts)} rows x {args.new_tokens} tokens, "
          f"{len({t for row in ours for t in row})} distinct tokens", flush=True)

    seconds: dict[str, list[float]] = {"ours": [], "hf": []}
    for rep in range(args.repeats + 1):  # repetition 0 is the warm-up, not timed
        pair = [("ours", run_ours), ("hf", run_hf)]
        for name, fn in pair if rep % 2 == 0 else pair[::-1]:  # alternate who goes first
            start = time.perf_counter()
            out = fn()
            took = time.perf_counter() - start
            if out != ours:
                sys.exit(f"FAIL: {name} changed its greedy output between repetitions")
            if rep > 0:
                seconds[name].append(took)
            tag = "warm-up" if rep == 0 else f"rep {rep}/{args.repeats}"
            tokens = len(prompts) * args.new_tokens
            print(f"  {tag:>9} {name:>4}: {took * 1e3:8.1f} ms  {tokens / took:8.0f} tok/s", flush=True)

    for name in ("ours", "hf"):
        s = seconds[name]
        print(f"{name:>4} seconds: median {statistics.median(s):.3f}  min {min(s):.3f}  max {max(s):.3f}")
    pairs = [h / o for o, h in zip(seconds["ours"], seconds["hf"])]
    print(f"per-pair ratio (hf / ours): min {min(pairs):.2f}  median {statistics.median(pairs):.2f}  max {max(pairs):.2f}")
    print(f"after the run: loadavg(1m) {os.getloadavg()[0]:.2f}")
    print(f"vlm_rollout ratio={statistics.median(seconds['hf']) / statistics.median(seconds['ours']):.2f}")


if __name__ == "__main__":
    main()
