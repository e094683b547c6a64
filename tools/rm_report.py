"""The reward-model finding over seeds: spot-check agreement of both RMs, and RL with each RM as the reward.

    python tools/rm_report.py runs/rm_finding/seed0 runs/rm_finding/seed1 ... [--json docs/findings/reward_models.json]

Each argument is one seed's `python -m experiments.run reward_models run.seed=S run.dir=DIR` directory.
Reads DIR/shared/summary.json (the RMs' spot check) and each arm's summary.json (held-out pass@1 by
the checker, before and after RL) and TensorBoard (reward/rm_disagreement, reward/rm_false_positive_frac:
mean over the first and the last 5 iterations). Prints a Markdown table (mean ± sample std over seeds)
and the verdicts (Welch's two-sided t-test at 5%, tools/findings.py's `compare`); writes every number to --json.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tools.findings import compare, mean_std  # noqa: E402

ARMS = ("checker", "classic_rm", "cot_rm")
SPOT = ("accuracy", "wrong_precision", "wrong_recall", "unparsed")
CURVES = ("reward/rm_disagreement", "reward/rm_false_positive_frac", "reward/truth_correct_frac", "reward/reward_mean")
EDGE = 5  # iterations averaged at the start and at the end of a curve


def seed_numbers(run_dir: Path) -> dict[str, float]:
    from k15.eval.curves import read_scalars

    out: dict[str, float] = {}
    shared = json.loads((run_dir / "shared" / "summary.json").read_text())
    for rm, stats in shared["reward_models"].items():
        for key in SPOT:
            out[f"{rm}/{key}"] = float(stats[key])
        out[f"{rm}/train_s"] = shared["stages"][rm]["wall_s"]
    for arm in ARMS:
        summary = json.loads((run_dir / arm / "summary.json").read_text())
        out[f"{arm}/sft_pass@1"] = summary["eval"]["sft"]["pass@1"]
        out[f"{arm}/rl_pass@1"] = summary["eval"]["rl"]["pass@1"]
        out[f"{arm}/rl_s"] = summary["stages"]["rl"]["wall_s"]
        series = read_scalars(run_dir / arm / "tb" / "rl", CURVES)
        for tag, (_, ys) in series.items():
            name = tag.split("/", 1)[1]
            out[f"{arm}/{name}_first"] = sum(ys[:EDGE]) / len(ys[:EDGE])
            out[f"{arm}/{name}_last"] = sum(ys[-EDGE:]) / len(ys[-EDGE:])
    out["wall_s"] = sum(s["wall_s"] for s in shared["stages"].values()) + sum(
        s["wall_s"] for arm in ARMS for s in json.loads((run_dir / arm / "summary.json").read_text())["stages"].values())
    return out


def fmt(v: tuple[float, float, int], percent: bool = True) -> str:
    m, sd, _ = v
    return f"{100 * m:.1f} ± {100 * sd:.1f}" if percent else f"{m:.0f} ± {sd:.0f}"


def report(dirs: list[Path]) -> tuple[dict, str]:
    per_seed = {f"{d}#{i}" if list(map(str, dirs)).count(str(d)) > 1 else str(d): seed_numbers(d) for i, d in enumerate(dirs)}
    keys = sorted({k for numbers in per_seed.values() for k in numbers})
    agg = {k: mean_std([n.get(k, float("nan")) for n in per_seed.values()]) for k in keys}
    a = lambda key: agg.get(key, (float("nan"), float("nan"), 0))  # noqa: E731 -- a curve no seed logged
    lines = [f"{len(dirs)} seeds ({', '.join(per_seed)}); mean ± sample std; percentages", "",
             "| RM | spot-check accuracy | precision (wrong) | recall (wrong) | unparsed verdicts |",
             "|---|---|---|---|---|"]
    for rm in ("classic_rm", "cot_rm"):
        lines.append(f"| {rm} | {fmt(a(f'{rm}/accuracy'))} | {fmt(a(f'{rm}/wrong_precision'))} | "
                     f"{fmt(a(f'{rm}/wrong_recall'))} | {fmt(a(f'{rm}/unparsed'), False)} |")
    lines += ["", "| RL reward | held-out pass@1 SFT -> RL (checker) | RM disagreement first -> last 5 it. | "
              "false positives first -> last 5 it. |", "|---|---|---|---|"]
    for arm in ARMS:
        row = f"| {arm} | {fmt(a(f'{arm}/sft_pass@1'))} -> {fmt(a(f'{arm}/rl_pass@1'))} |"
        if arm == "checker":
            row += " - | - |"
        else:
            row += (f" {fmt(a(f'{arm}/rm_disagreement_first'))} -> {fmt(a(f'{arm}/rm_disagreement_last'))} |"
                    f" {fmt(a(f'{arm}/rm_false_positive_frac_first'))} -> {fmt(a(f'{arm}/rm_false_positive_frac_last'))} |")
        lines.append(row)
    verdicts = {
        "CoT RM spot-check accuracy higher than Classic": compare(a("classic_rm/accuracy"), a("cot_rm/accuracy"), "higher"),
        "RL with the CoT RM ends higher than with the Classic RM": compare(a("classic_rm/rl_pass@1"), a("cot_rm/rl_pass@1"), "higher"),
        "RL with the CoT RM ends like RL with the checker": compare(a("checker/rl_pass@1"), a("cot_rm/rl_pass@1"), "similar"),
        "RL with the Classic RM ends like RL with the checker": compare(a("checker/rl_pass@1"), a("classic_rm/rl_pass@1"), "similar"),
    }
    lines += [""] + [f"- {claim}: {said}" for claim, said in verdicts.items()]
    lines.append(f"- wall time per seed (all stages, sum): {fmt(a('wall_s'), False)} s")
    data = {"seeds": per_seed, "aggregate": {k: {"mean": m, "std": s, "n": n} for k, (m, s, n) in agg.items()},
            "verdicts": verdicts}
    return data, "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dirs", nargs="+", type=Path)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    data, text = report(args.dirs)
    print(text)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(data, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
