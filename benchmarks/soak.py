"""Soak: a long tiny RL run, to show resident memory stays flat once warmed up.

    .venv/bin/python benchmarks/soak.py [--iterations 1000] [--warmup 100]

Runs the real RL stage (rollouts, scoring, training, logging, checkpoints every 100 iterations) on
a tiny random model with partial rollouts and prioritized sampling on, reads `perf/rss_mb` back from
TensorBoard, and compares the resident memory after the warm-up with the end of the run. The last
line is `soak growth=X.X%` (end over post-warm-up, minus one).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from k15.config import apply_overrides, base
from k15.eval.curves import read_scalars
from k15.pipeline import run_pipeline
from k15.quiet import quiet_libraries
from k15.runs import create_run_dir


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=1000)
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    quiet_libraries()
    with tempfile.TemporaryDirectory() as tmp:
        cfg = apply_overrides(base(), [
            "model.hidden_size=32", "model.num_layers=2", "model.num_heads=2", "model.num_kv_heads=2",
            "model.intermediate_size=64", "model.max_seq_len=64", "stages=[rl]", f"run.threads={args.threads}",
            f"rl.iterations={args.iterations}", "rl.prompts_per_iteration=8", "rl.samples_per_prompt=4",
            "rl.max_new_tokens=24", "rl.partial.budget=8", "rl.sampling.prioritized=true",
            "rl.checkpoint_every_n_iterations=100", "rl.sample_every_n_iterations=100", "trainer.progress=false",
            f"run.dir={Path(tmp) / 'soak'}",
        ])
        cfg.run.name = "soak"
        run_dir = create_run_dir(cfg)
        run_pipeline(cfg, run_dir)
        steps, rss = read_scalars(run_dir / "tb" / "rl", ("perf/rss_mb",))["perf/rss_mb"]
    series = dict(zip(steps, rss))
    after_warmup = series[min(s for s in series if s >= args.warmup)]
    end = series[max(series)]
    for s in sorted(series)[:: max(1, len(series) // 10)] + [max(series)]:
        print(f"iteration {s:5d}: rss {series[s]:7.1f} MB")
    print(f"rss after warm-up (iteration {args.warmup}): {after_warmup:.1f} MB, at the end: {end:.1f} MB, "
          f"max after warm-up: {max(v for s, v in series.items() if s >= args.warmup):.1f} MB")
    print(f"soak growth={100 * (end / after_warmup - 1):.1f}%")


if __name__ == "__main__":
    main()
