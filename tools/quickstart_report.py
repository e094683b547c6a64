"""The quickstart's results table, recorded from runs instead of typed by hand.

    python tools/quickstart_report.py run --seeds 0 1 2 [--root runs/quickstart_seeds] [key=value ...]
        runs `python -m experiments.run quickstart run.seed=S ...` for each seed (one after another, so the
        wall times are the machine's), then writes the report below
    python tools/quickstart_report.py report RUN_DIR [RUN_DIR ...]
        reads finished quickstart runs and writes the report

The report: docs/quickstart.json (per seed: the overrides, wall time per stage and in all, held-out
pass@1 per level, tokens per answer, long-CoT share of every evaluated model; the mean and sample
std over seeds, and each seed's RL gain in points) and docs/quickstart.md (the same as tables, with
the command that made them), which README's quickstart section quotes.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"


def run_seeds(seeds: list[int], root: Path, overrides: list[str]) -> list[Path]:
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "33554432", "MALLOC_TRIM_THRESHOLD_": "1073741824"}  # as make does
    dirs = []
    for seed in seeds:
        run_dir = root / f"seed{seed}"
        command = [sys.executable, "-m", "experiments.run", "quickstart", f"run.seed={seed}", *overrides, f"run.dir={run_dir}"]
        print(" ".join(command[1:]), flush=True)
        start = time.perf_counter()
        code = subprocess.run(command, cwd=ROOT, env=env).returncode
        if code:
            raise SystemExit(f"error: the quickstart with seed {seed} exited with status {code}")
        (run_dir / "wall_s.txt").write_text(f"{time.perf_counter() - start:.1f}\n")  # the whole process, imports included
        dirs.append(run_dir)
    return dirs


def load(run_dir: Path) -> dict:
    summary = json.loads((run_dir / "summary.json").read_text())
    seed = int(yaml.safe_load((run_dir / "config.yaml").read_text())["run"]["seed"])
    stages = {name: s["wall_s"] for name, s in summary["stages"].items()}
    wall = run_dir / "wall_s.txt"
    models = {}
    for name, ev in summary["eval"].items():
        levels = ev["levels"]
        samples = sum(level["samples"] for level in levels.values())
        models[name] = {
            "pass@1": ev["pass@1"], "mean_tokens": ev["mean_tokens"],
            "long_share": round(sum(level["long_share"] * level["samples"] for level in levels.values()) / samples, 4),
            "levels": {k: level["pass@1"] for k, level in levels.items()},
        }
    shown = run_dir.resolve().relative_to(ROOT) if run_dir.resolve().is_relative_to(ROOT) else run_dir
    return {"run_dir": str(shown), "seed": seed, "stage_wall_s": stages,
            "process_wall_s": float(wall.read_text()) if wall.is_file() else None, "eval": models}


def mean_std(values: list[float]) -> dict:
    n = len(values)
    m = sum(values) / n
    sd = math.sqrt(sum((v - m) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0
    return {"mean": round(m, 4), "std": round(sd, 4), "n": n}


def aggregate(runs: list[dict]) -> dict:
    models = list(runs[0]["eval"])
    levels = list(runs[0]["eval"][models[0]]["levels"])
    out = {"models": {}, "gain_points": None}
    for model in models:
        out["models"][model] = {
            key: mean_std([r["eval"][model][key] for r in runs]) for key in ("pass@1", "mean_tokens", "long_share")
        }
        out["models"][model]["levels"] = {lv: mean_std([r["eval"][model]["levels"][lv] for r in runs]) for lv in levels}
    if {"sft", "rl"} <= set(models):
        gains = [round(100 * (r["eval"]["rl"]["pass@1"] - r["eval"]["sft"]["pass@1"]), 1) for r in runs]
        out["gain_points"] = {"per_seed": gains, **mean_std(gains), "min": min(gains)}
    totals = [sum(r["stage_wall_s"].values()) for r in runs]
    out["stage_wall_s_total"] = {"per_seed": [round(t, 1) for t in totals], **mean_std(totals), "max": round(max(totals), 1)}
    return out


def markdown(runs: list[dict], agg: dict, command: str) -> str:
    models = list(runs[0]["eval"])
    levels = list(runs[0]["eval"][models[0]]["levels"])
    pct = lambda d: f"{100 * d['mean']:.1f} ± {100 * d['std']:.1f}%"  # noqa: E731
    lines = ["# Quickstart results", "", f"Made by `{command}` (tools/quickstart_report.py); numbers from docs/quickstart.json.",
             "", f"Held-out pass@1 at T=1, mean ± sample std over {len(runs)} seeds ({', '.join(str(r['seed']) for r in runs)}):",
             "", "| model | " + " | ".join(f"L{lv}" for lv in levels) + " | mean | tokens | long CoT |",
             "|---|" + "---|" * (len(levels) + 3)]
    for model in models:
        m = agg["models"][model]
        lines.append(f"| {model} | " + " | ".join(pct(m["levels"][lv]) for lv in levels)
                     + f" | **{pct(m['pass@1'])}** | {m['mean_tokens']['mean']:.1f} | {100 * m['long_share']['mean']:.0f}% |")
    lines += ["", "Per seed:", "", "| seed | " + " | ".join(f"{m} pass@1" for m in models) + " | RL gain | stages (s) | process (s) |",
              "|---|" + "---|" * (len(models) + 3)]
    for r in runs:
        gain = 100 * (r["eval"]["rl"]["pass@1"] - r["eval"]["sft"]["pass@1"]) if {"sft", "rl"} <= set(r["eval"]) else float("nan")
        stages = ", ".join(f"{k} {v:.0f}" for k, v in r["stage_wall_s"].items())
        process = f"{r['process_wall_s']:.0f}" if r["process_wall_s"] else "-"
        lines.append(f"| {r['seed']} | " + " | ".join(f"{100 * r['eval'][m]['pass@1']:.1f}%" for m in models)
                     + f" | {gain:+.1f} | {stages} | {process} |")
    if agg["gain_points"]:
        g = agg["gain_points"]
        lines += ["", f"RL gain over SFT: {g['mean']:+.1f} ± {g['std']:.1f} points (smallest {g['min']:+.1f})."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the quickstart for each seed, then report")
    run.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    run.add_argument("--root", type=Path, default=ROOT / "runs" / "quickstart_seeds")
    run.add_argument("overrides", nargs="*", help="key=value, applied to every seed's run")
    report = sub.add_parser("report", help="report finished quickstart runs")
    report.add_argument("run_dirs", type=Path, nargs="+")
    for p in (run, report):
        p.add_argument("--out", type=Path, default=DOCS, help="where quickstart.json and quickstart.md go")
    args = parser.parse_args(argv)
    if args.command == "run":
        dirs = run_seeds(args.seeds, args.root, args.overrides)
        command = f"python tools/quickstart_report.py run --seeds {' '.join(map(str, args.seeds))}" + "".join(
            f" {o}" for o in args.overrides)
    else:
        dirs = args.run_dirs
        command = "python tools/quickstart_report.py report " + " ".join(str(d) for d in dirs)
    runs = [load(d) for d in dirs]
    agg = aggregate(runs)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "quickstart.json").write_text(json.dumps({"command": command, "runs": runs, "aggregate": agg}, indent=2) + "\n")
    (args.out / "quickstart.md").write_text(markdown(runs, agg, command))
    print(markdown(runs, agg, command))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
