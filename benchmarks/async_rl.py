"""Asynchronous RL vs the synchronous loop at equal wall-clock: trained samples per second and held-out pass@1.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/async_rl.py [--seconds 600] [--init-from MODEL_DIR]
        [--arms sync,async | sync_partial,async_partial] [--budget 24] [--override KEY=VALUE ...]
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/async_rl.py --smoke    # seconds; the code path, not a measurement

Steps:
1. One starting policy for both arms: the quickstart's pretraining and long-CoT SFT on the tiny world
   (experiments/quickstart.py), or `--init-from` an exported model directory (e.g. a quickstart run's
   sft/model) to skip them.
2. Each arm in turn runs the pipeline's `stages=[rl, eval]` from that policy, with the quickstart's RL
   settings and `--override`s: the first of `--arms` is synchronous (`rl.async.workers=0`), the second
   asynchronous (`rl.async.workers=1`, `rl.async.max_staleness=1`); the `_partial` arms add partial
   rollouts (`rl.partial.budget=--budget`). One thread per process (`run.threads=1`: the trainer; a
   rollout worker always has one), so on 2 cores the async arm's trainer and worker each get one. RL
   stops after `--seconds` of training (`rl.max_seconds`: Lightning's Timer in the RL stage).
3. Trained samples/s = groups trained x samples per prompt / the training seconds (`perf/elapsed_s`
   at the last iteration; the workers are ready before training starts); groups trained are
   prompts x iterations, or with partial rollouts the finished groups of each iteration
   (`rollout/finished_groups`: the synchronous loop trains only groups whose k samples all
   finished). Held-out pass@1 is the pipeline's eval of the RL model.

Long-tailed response lengths: the SFT policy writes a short answer or a long chain of thought (half of
its traces are long CoT: sft.long_fraction=0.5, with steps first written wrong then corrected:
world.error_rate), over levels 1 to 6 (one to six operations, a chain's length grows with the level;
`--override world.max_level=8` with a levels-1-8 policy for longer tails), and `rl.max_new_tokens`
(96 by default, the quickstart's: the tiny model's context is 128) lets the longest chains finish. A
synchronous iteration waits for its longest response before training; a worker keeps generating
while the trainer trains.

The last line is `async ratio=X.XX` (trained samples/s, the second arm over the first).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import k15.pipeline as pipeline  # noqa: E402
from k15.config import ExperimentConfig, apply_overrides, base  # noqa: E402
from k15.eval.curves import read_scalars  # noqa: E402
from k15.quiet import quiet_libraries  # noqa: E402
from k15.runs import create_run_dir  # noqa: E402

SYNC, ASYNC = ["rl.async.workers=0"], ["rl.async.workers=1", "rl.async.max_staleness=1"]
ARMS = {"sync": SYNC, "async": ASYNC, "sync_partial": SYNC, "async_partial": ASYNC}  # _partial: + rl.partial.budget
# --smoke: a tiny model and world (as tests/tiny.py), SFT from scratch, a few seconds of RL per arm
SMOKE = ["model.hidden_size=32", "model.num_layers=2", "model.num_heads=2", "model.num_kv_heads=2",
         "model.intermediate_size=64", "model.max_seq_len=64", "world.max_level=3", "sft.batch_size=16",
         "sft.num_examples=200", "rl.prompts_per_iteration=2", "rl.samples_per_prompt=2", "rl.num_prompts=64",
         "eval.problems_per_level=2", "eval.samples_per_problem=1", "eval.max_new_tokens=20"]


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=600.0, help="RL training seconds per arm")
    p.add_argument("--max-new-tokens", type=int, default=96, help="rl.max_new_tokens and eval.max_new_tokens")
    p.add_argument("--init-from", help="an exported model directory to start both arms from (skips pretrain + SFT)")
    p.add_argument("--threads", type=int, default=1, help="torch threads per process")
    p.add_argument("--arms", default="sync,async", help="the synchronous arm, then the asynchronous one: sync,async "
                   "or sync_partial,async_partial")
    p.add_argument("--budget", type=int, default=24, help="rl.partial.budget of the _partial arms")
    p.add_argument("--override", action="append", default=[], metavar="KEY=VALUE", help="for both arms (repeatable)")
    p.add_argument("--smoke", action="store_true", help="tiny model, 3 s of RL per arm: checks the code path only")
    args = p.parse_args()
    args.arms = args.arms.split(",")
    if len(args.arms) != 2 or any(a not in ARMS for a in args.arms) or args.arms[0].startswith("async") \
            or not args.arms[1].startswith("async"):
        p.error(f"--arms must be a synchronous then an asynchronous arm of {', '.join(ARMS)}, got {','.join(args.arms)}")
    return args


def quickstart(args: argparse.Namespace, run_dir: Path, overrides: list[str]) -> ExperimentConfig:
    """The quickstart's config (or the smoke one) with `overrides`, in `run_dir`."""
    from experiments.quickstart import config

    tokens = 20 if args.smoke else args.max_new_tokens
    common = ["trainer.progress=false", f"run.threads={args.threads}", "rl.sample_every_n_iterations=0",
              f"rl.max_new_tokens={tokens}", f"eval.max_new_tokens={tokens}", "sft.long_fraction=0.5"]
    cfg = apply_overrides(base() if args.smoke else config(),
                          common + (SMOKE if args.smoke else []) + overrides + [f"run.dir={run_dir}"])
    cfg.run.name = run_dir.name
    return cfg


def start_policy(args: argparse.Namespace, root: Path) -> Path:
    """Step 1: pretrain + SFT once (the smoke mode: a few SFT steps from scratch)."""
    stages = ["stages=[sft]", "sft.max_steps=10"] if args.smoke else ["stages=[pretrain,sft]"]
    cfg = quickstart(args, root / "start", stages)
    pipeline.run_pipeline(cfg, create_run_dir(cfg))
    return root / "start" / "sft" / "model"


def run_arm(args: argparse.Namespace, root: Path, name: str, policy: Path) -> dict:
    """Step 2-3 for one arm: RL for `--seconds`, then the held-out eval; its numbers."""
    seconds = 3.0 if args.smoke else args.seconds
    partial = [f"rl.partial.budget={args.budget}"] if name.endswith("_partial") else []
    cfg = quickstart(args, root / name, ["stages=[rl,eval]", "eval.models=[rl]", f"model.init_from={policy}",
                                         "rl.iterations=100000", f"rl.max_seconds={seconds}", *ARMS[name], *partial,
                                         *args.override])
    summary = pipeline.run_pipeline(cfg, create_run_dir(cfg))
    run_dir = root / name
    iterations = len((run_dir / "rl" / "drawn.jsonl").read_text().splitlines())
    tags = ("rollout/len_p50", "rollout/len_p95", "rollout/truncated_frac", "perf/iteration_s", "perf/elapsed_s",
            "rollout/finished_groups")
    curves = read_scalars(run_dir / "tb" / "rl", tags)
    train_s = curves["perf/elapsed_s"][1][-1]
    # with partial rollouts the synchronous loop trains only the groups whose k samples all finished
    groups = sum(curves["rollout/finished_groups"][1]) if "rollout/finished_groups" in curves \
        else iterations * cfg.rl.prompts_per_iteration
    samples = int(groups) * cfg.rl.samples_per_prompt
    mean = {tag: sum(values) / max(len(values), 1) for tag, (_, values) in curves.items()}
    return {"iterations": iterations, "train_s": train_s, "samples": samples, "samples_per_s": samples / train_s,
            "pass@1": summary["eval"]["rl"]["pass@1"], "len_p50": mean["rollout/len_p50"],
            "len_p95": mean["rollout/len_p95"], "truncated_frac": mean["rollout/truncated_frac"],
            "first_iteration_s": curves["perf/iteration_s"][1][0]}


def describe_load() -> str:
    """The 1-minute load average, so a reader can tell how busy the machine was (as benchmarks/rollout.py)."""
    return f"loadavg(1m) {os.getloadavg()[0]:.2f}" if hasattr(os, "getloadavg") else "load unknown"


def main() -> None:
    args = parse_args()
    quiet_libraries()
    print(f"async_rl: {'smoke (not a measurement)' if args.smoke else f'{args.seconds:g} s of RL per arm'}, "
          f"{args.threads} thread(s) per process, {os.cpu_count()} cpus, {describe_load()}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        started = time.perf_counter()
        policy = Path(args.init_from) if args.init_from else start_policy(args, root)
        print(f"starting policy: {policy} ({time.perf_counter() - started:.0f} s)", flush=True)
        results = {name: run_arm(args, root, name, policy) for name in args.arms}
    for name, r in results.items():
        print(f"{name} ({ARMS[name][0]}): {r['iterations']} iterations in {r['train_s']:.1f} s, {r['samples']} samples "
              f"trained = {r['samples_per_s']:.2f} samples/s; held-out pass@1 {r['pass@1']:.3f}; response length "
              f"p50 {r['len_p50']:.0f} p95 {r['len_p95']:.0f} (iteration means), {r['truncated_frac']:.0%} cut; "
              f"first iteration {r['first_iteration_s']:.1f} s", flush=True)
    print(f"after the runs: {describe_load()}")
    print("async_rl summary " + json.dumps(results, sort_keys=True))
    sync, asynchronous = (results[name] for name in args.arms)
    print(f"async ratio={asynchronous['samples_per_s'] / sync['samples_per_s']:.2f}")


if __name__ == "__main__":
    main()
