"""Run the paper's findings (experiments/*.py) over seeds from one base model, and report them.

    python tools/findings.py run --base runs/findings/base/sft/model --findings curriculum,prioritized --seeds 0,1,2
    python tools/findings.py report [--out runs/findings] [--doc docs/results.md] [--figures docs/figures] [--data docs/findings]

`run` resolves every arm of every named experiment (with `model.init_from=BASE stages=[rl,eval]
eval.models=[init,rl] run.seed=S` and any extra `key=value` overrides), runs each distinct arm
config once (the plain arm is the same config in many findings) under OUT/pool/<hash>, then
evaluates the RL checkpoints on the held-out set (accuracy and length along the run). Only the RL
seed varies between seeds; the base model is shared. At most --jobs runs at a time, each with one
thread. OUT/<experiment>/seed<S>/results.json maps every arm to its run's summary, as
`python -m experiments.run` writes it for one seed. `--borrow ARM=LABEL:ARM` reuses another results
directory's runs for an arm, `--only` runs some arms, `--arm-base ARM=DIR` starts an arm's RL from a
model of its own (model_size's larger model), and `--long-from LABEL:ARM` gives long2short each
seed's long-CoT model; a long2short run's methods are its arms (RUN#method in arms.json).

`report` aggregates those results into mean and spread over seeds per arm, writes one PNG per
finding and the tables of docs/results.md (between the markers of each finding's section).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from experiments.long2short import METHODS as L2S_METHODS  # noqa: E402  (needs ROOT on sys.path)


@dataclass
class Finding:
    id: str
    experiment: str
    title: str
    reference: str  # the arm the others are compared with
    expect: dict = field(default_factory=dict)  # arm -> {metric: "higher" | "lower" | "similar"} against the reference
    init_from_base: bool = True  # False: the experiment trains its own models (model size)
    also: list = field(default_factory=list)  # (reference arm, arm, metric, expectation): comparisons between other arms
    from_long_model: bool = False  # True: each seed starts from that seed's long-CoT RL model (--long-from)


FINDINGS = [
    Finding("F1", "length_accuracy", "Length and accuracy rise together during RL", "plain"),
    Finding("F2", "rl_loss", "Negative gradients (k1.5 loss) beat ReST", "k15",
            {"rest": {"final_pass@1": "lower", "final_hard_pass@1": "lower", "auc_pass@1": "lower"}}),
    Finding("F3", "curriculum", "Curriculum (uniform, then hard only) beats uniform on hard problems", "uniform",
            {"curriculum": {"final_hard_pass@1": "higher", "final_pass@1": "higher"}}),
    Finding("F4", "prioritized", "Prioritized sampling speeds learning", "uniform",
            {"prioritized": {"auc_pass@1": "higher", "auc_hard_pass@1": "higher"}}),
    Finding("F5", "length_penalty", "The length penalty curbs length; a warm-up keeps early training fast", "off",
            {"from_start": {"final_tokens": "lower", "final_pass@1": "similar", "early_pass@1": "lower"},
             "after_warmup": {"final_tokens": "lower", "final_pass@1": "similar", "early_pass@1": "similar"}}),
    Finding("F6", "long2short", "Long2short RL is the most token-efficient way to shorten a long-CoT model", "long",
            {**{m: {"final_tokens": "lower"} for m in L2S_METHODS}, "l2s_rl": {"final_tokens": "lower", "final_pass@1": "similar"}},
            # token efficiency, the paper's ordering l2s RL > DPO > merge + RS > merge: the less pass@1 a method
            # gives up per token it cuts, the more efficient
            also=[("l2s_rl", "dpo", "cost_per_token_saved", "higher"), ("dpo", "shortest_rs", "cost_per_token_saved", "higher"),
                  ("shortest_rs", "merge", "cost_per_token_saved", "higher")],
            from_long_model=True),
    Finding("F7", "model_size", "A small model reaches a larger one's accuracy with longer answers", "small",
            {"tiny": {"final_tokens": "higher", "final_pass@1": "similar"}}, init_from_base=False),
    Finding("F8", "partial_rollouts", "Partial rollouts keep learning intact at a fixed per-iteration token budget", "full",
            {"partial_all": {"final_pass@1": "similar", "max_tokens_per_iteration": "lower"},
             "partial_current": {"final_pass@1": "similar", "max_tokens_per_iteration": "lower"}}),
    Finding("F8", "partial_rollouts_wallclock", "At equal wall-clock, asynchronous partial rollouts learn as well as "
            "synchronous full rollouts", "full",
            {"full_async": {"final_pass@1": "similar", "iterations": "higher"},
             "partial_async": {"final_pass@1": "similar", "iterations": "higher"}}),
    Finding("F9", "curation", "Without the curation filter, reward on guessable prompts rises without correctness", "filter",
            {"no_filter": {"guess_reward_final": "higher", "final_pass@1": "similar"}}),
    Finding("F10", "rl_baseline", "The mean-reward baseline works as well as the exact log-mean-exp", "mean",
            {"logmeanexp": {"final_pass@1": "similar", "auc_pass@1": "similar"}}),
    Finding("F11", "optimizer_reset", "A fresh optimizer every iteration (design choice)", "reset",
            {"persistent": {"final_pass@1": "similar", "auc_pass@1": "similar"}}),
]
BY_EXPERIMENT = {f.experiment: f for f in FINDINGS}


# ----------------------------------------------------------------------------------------------
# Running


FINGERPRINT_SECTIONS = ("model", "world", "trainer", "pretrain", "sft", "rl", "rewards", "eval", "long2short")


# Keys added to these sections after the report's runs, with the values those runs had: left out of
# the hash while they keep them, so finished runs keep their fingerprints (a test pins one).
ADDED_LATER = {
    "eval": {"prompt_path": None, "num_prompts": 0, "pass_k": [1]},
    "rewards": {"math": {"answer_format": "auto"}, "sandbox": {"allow_weak": False, "python": ""}},
    "trainer": {"record_data_order": False},
    "rl": {"asynchronous": {"workers": 0, "max_staleness": 1, "heartbeat_timeout_s": 300.0}, "max_seconds": 0.0},
}
ADDED_LATER["rewards"]["rm"] = {"kind": "none", "path": None, "domains": ["freeform"], "threshold": 0.5, "batch_size": 64,
                                "max_new_tokens": 96, "prompt_template": None, "probe": True, "chat_template": "none"}


def _without_added_later(values: dict, added: dict) -> dict:
    out = dict(values)
    for key, default in added.items():
        if key in out and out[key] == default:  # a value, or a whole section added later, at its defaults
            del out[key]
        elif isinstance(default, dict) and isinstance(out.get(key), dict):
            out[key] = _without_added_later(out[key], default)
    return out


def fingerprint(cfg) -> str:
    """A hash of the sections that make a text run (not its name or directory), so a new section
    elsewhere in the schema (e.g. the vision stages') does not make finished runs look different."""
    from omegaconf import OmegaConf

    parts = [f"seed={cfg.run.seed}", f"threads={cfg.run.threads}", f"stages={cfg.stages}"]
    for name in FINGERPRINT_SECTIONS:
        values = OmegaConf.to_container(OmegaConf.structured(getattr(cfg, name)))
        parts.append(OmegaConf.to_yaml(_without_added_later(values, ADDED_LATER.get(name, {}))))
    return hashlib.sha1("\n".join(parts).encode()).hexdigest()[:12]


def rescale_schedule(cfg, default_iterations: int) -> None:
    """Keep switch points at the same share of the run when rl.iterations was overridden."""
    n = cfg.rl.iterations
    if n == default_iterations:
        return
    scale = lambda v: int(round(v * n / default_iterations))
    s, lp = cfg.rl.sampling, cfg.rl.length_penalty
    s.hard_from_iteration = scale(s.hard_from_iteration)
    s.gradual_iterations = scale(s.gradual_iterations)
    lp.warmup_iterations = scale(lp.warmup_iterations)


def finding_arms(experiment: str, seed: int, base: str | None, overrides: list[str], checkpoint_every: int,
                 arm_bases: dict[str, str] | None = None, long_model: str | None = None) -> dict:
    """{arm: config} for one seed of one experiment, as the driver runs it. `arm_bases` starts the
    named arms' RL from a model of their own (e.g. the larger model's SFT export in model_size);
    `long_model` is the long-CoT model a long2short run shortens."""
    from experiments.run import resolve
    from k15.config import apply_overrides

    finding = BY_EXPERIMENT.get(experiment)
    common = [f"run.seed={seed}", "run.threads=1", "trainer.progress=false",
              f"rl.checkpoint_every_n_iterations={checkpoint_every}"]
    if finding is not None and finding.from_long_model:
        if not (base and long_model):
            raise SystemExit(f"error: {experiment} shortens a long-CoT model: pass --base (the short model) and --long-from")
        common += [f"model.init_from={long_model}", f"long2short.long_model={long_model}", f"long2short.short_model={base}",
                   f"stages=[{','.join(L2S_METHODS)},eval]", f"eval.models=[init,{','.join(L2S_METHODS)}]"]
    elif finding is None or finding.init_from_base:
        if not base:
            raise SystemExit(f"error: {experiment} starts from a base model: pass --base")
        common += [f"model.init_from={base}", "stages=[rl,eval]", "eval.models=[init,rl]"]
    else:
        common += ["eval.models=[sft,rl]"]
    defaults = resolve(experiment, [])
    arms = resolve(experiment, common + overrides)
    for arm, cfg in arms.items():
        if arm in (arm_bases or {}):
            arms[arm] = cfg = apply_overrides(cfg, [f"model.init_from={arm_bases[arm]}", "stages=[rl,eval]", "eval.models=[init,rl]"])
        rescale_schedule(cfg, defaults[arm].rl.iterations)
    return arms


class ArmRun(NamedTuple):
    dir: Path
    model: str  # the evaluated model that is this arm: "rl", or a long2short method (arms.json: RUN#MODEL)


def arm_run(entry: str) -> ArmRun:
    """An arms.json entry, RUN_DIR or RUN_DIR#MODEL, with a relative directory taken from the repository root."""
    run_dir, _, model = entry.partition("#")
    path = Path(run_dir)
    return ArmRun(path if path.is_absolute() else ROOT / path, model or "rl")


def seed_entry(out: Path, label_arm: str, seed: int, option: str) -> str:
    """The arms.json entry of one seed of LABEL:ARM (what --borrow and --long-from name)."""
    label, _, arm = label_arm.partition(":")
    path = out / label / f"seed{seed}" / "arms.json"
    mapping = json.loads(path.read_text()) if path.is_file() else {}
    if arm not in mapping:
        raise SystemExit(f"error: {option}{label_arm}: {path} has no arm '{arm}' (run that label for seed {seed} first)")
    return mapping[arm]


def is_done(run_dir: Path) -> bool:
    return (run_dir / "summary.json").is_file() and (run_dir / "curve.json").is_file()  # curve.json is written last


def cmd_run(args) -> int:
    from k15.config import to_yaml

    out = Path(args.out)
    seeds = [int(s) for s in args.seeds.split(",")]
    jobs: dict[str, tuple[Path, bool]] = {}  # pool dir -> (dir, guess eval)
    borrowed = dict(item.split("=", 1) for item in args.borrow)
    arm_bases = dict(item.split("=", 1) for item in args.arm_base)
    for seed in seeds:  # seed-major: every finding gets its first seed before any gets a second
        for experiment in args.findings.split(","):
            finding = BY_EXPERIMENT.get(experiment)
            from_long = finding is not None and finding.from_long_model
            if from_long and args.only:
                raise SystemExit(f"error: --only does not apply to {experiment} (its arms are the stages of one run; "
                                 "override stages= and eval.models= instead)")
            long_model = None
            if from_long and args.long_from:
                long_model = str(arm_run(seed_entry(out, args.long_from, seed, "--long-from ")).dir / "rl" / "model")
            arms = finding_arms(experiment, seed, args.base, args.overrides, args.checkpoint_every, arm_bases, long_model)
            mapping = {}
            for arm, cfg in arms.items():
                if args.only and arm not in args.only.split(",") and arm not in borrowed:
                    continue
                if arm in borrowed:  # this seed's run of an arm of another results directory
                    mapping[arm] = seed_entry(out, borrowed[arm], seed, f"--borrow {arm}=")
                    continue
                run_dir = out / "pool" / fingerprint(cfg)
                if from_long:
                    # one run evaluates the long model and every method: each is an arm (RUN#eval entry)
                    mapping.update({"long": f"{run_dir}#init", **{m: f"{run_dir}#{m}" for m in L2S_METHODS}})
                else:
                    mapping[arm] = str(run_dir)
                if str(run_dir) not in jobs and not is_done(run_dir):
                    if run_dir.exists():
                        shutil.rmtree(run_dir)  # an interrupted earlier attempt
                    run_dir.mkdir(parents=True)
                    (run_dir / "config.yaml").write_text(to_yaml(cfg))
                    jobs[str(run_dir)] = (run_dir, experiment == "curation")
            label = args.label or experiment
            seed_dir = out / label / f"seed{seed}"
            seed_dir.mkdir(parents=True, exist_ok=True)
            if args.only and (seed_dir / "arms.json").is_file():  # keep the arms this run leaves alone
                mapping = {**json.loads((seed_dir / "arms.json").read_text()), **mapping}
            (seed_dir / "arms.json").write_text(json.dumps(mapping, indent=2) + "\n")
            (out / label / "meta.json").write_text(json.dumps({"experiment": experiment, "overrides": args.overrides}) + "\n")
    print(f"{len(jobs)} runs to do", flush=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    pending, running = list(jobs.values()), []
    while pending or running:
        while pending and len(running) < args.jobs:
            run_dir, guess = pending.pop(0)
            cmd = [sys.executable, str(Path(__file__).resolve()), "one", str(run_dir)] + (["--guess"] if guess else [])
            log = open(run_dir / "run.log", "w")
            running.append((subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT), run_dir, time.time()))
            print(f"{time.strftime('%H:%M:%S')} start {run_dir}", flush=True)
        time.sleep(2)
        for proc, run_dir, started in list(running):
            if proc.poll() is not None:
                running.remove((proc, run_dir, started))
                status = "done" if proc.returncode == 0 else f"FAILED ({proc.returncode}), see {run_dir}/run.log"
                print(f"{time.strftime('%H:%M:%S')} {status} {run_dir} in {time.time() - started:.0f}s", flush=True)
    for experiment in args.findings.split(","):
        for seed in seeds:
            write_results(out / (args.label or experiment) / f"seed{seed}")
    return 0


def write_results(seed_dir: Path) -> None:
    """results.json of one seed of one experiment: {arm: summary}, as k15.arms writes it."""
    mapping = json.loads((seed_dir / "arms.json").read_text())
    results = {}
    for arm, entry in mapping.items():
        run = arm_run(entry)
        summary = run.dir / "summary.json"
        if summary.is_file():
            results[arm] = {**json.loads(summary.read_text()), "model": run.model}
    (seed_dir / "results.json").write_text(json.dumps(results, indent=2) + "\n")


def cmd_one(args) -> int:
    """Run one pool directory's config, then evaluate its RL checkpoints (curve.json)."""
    import torch

    from k15.config import load_yaml
    from k15.pipeline import run_pipeline
    from k15.quiet import quiet_libraries

    quiet_libraries()
    run_dir = Path(args.run_dir)
    cfg = load_yaml(run_dir / "config.yaml")
    torch.set_num_threads(1)
    summary = run_pipeline(cfg, run_dir)
    start = "init" if "init" in summary["eval"] else "sft"
    curve = []
    if "rl" in cfg.stages:  # long2short runs have no RL stage of their own: only their final models are evaluated
        curve = [{"iteration": 0, **summary["eval"][start]}]
        curve += checkpoint_curve(cfg, run_dir, summary["exports"][start])
    guess = None
    if args.guess:
        guess = guess_curve(cfg, run_dir, summary["exports"][start])
    (run_dir / "curve.json").write_text(json.dumps({"heldout": curve, "guess": guess}, indent=2) + "\n")
    for ckpt in run_dir.glob("*/checkpoints/*.ckpt"):  # ~10 MB each (rl, l2s_rl, ...); the exports stay
        ckpt.unlink()
    return 0


def checkpoints(run_dir: Path) -> list[tuple[int, Path]]:
    found = []
    for path in (run_dir / "rl" / "checkpoints").glob("iteration*.ckpt"):
        found.append((int(re.sub(r"\D", "", path.stem)), path))
    return sorted(found)


def load_at(cfg, model_dir: str, ckpt: Path | None):
    import torch

    from k15.models.decoder import load_model_and_tokenizer

    model, tok = load_model_and_tokenizer(cfg.model, model_dir)
    if ckpt is not None:
        state = torch.load(ckpt, map_location="cpu", weights_only=False)["state_dict"]
        model.load_state_dict({k.removeprefix("model."): v for k, v in state.items() if k.startswith("model.")})
    model.eval()
    return model, tok


def iterations_done(cfg, run_dir: Path) -> int:
    """The RL iterations the run trained: rl.iterations, or fewer when rl.max_seconds ended it (one line of
    rl/drawn.jsonl per iteration)."""
    drawn = run_dir / "rl" / "drawn.jsonl"
    return len(drawn.read_text().splitlines()) if drawn.is_file() else cfg.rl.iterations


def checkpoint_curve(cfg, run_dir: Path, start_model: str) -> list[dict]:
    """Held-out pass@1 and tokens per level at every saved RL iteration (the final one from the summary)."""
    from k15.eval.evaluate import evaluate

    curve, final = [], iterations_done(cfg, run_dir)
    for iteration, ckpt in checkpoints(run_dir):
        if iteration >= final:
            continue  # the final model is evaluated by the pipeline
        model, tok = load_at(cfg, start_model, ckpt)
        curve.append({"iteration": iteration, **evaluate(model, tok, cfg.world, cfg.eval, seed=cfg.run.seed).to_dict()})
    summary = json.loads((run_dir / "summary.json").read_text())
    curve.append({"iteration": final, **summary["eval"]["rl"]})
    return curve


def guess_curve(cfg, run_dir: Path, start_model: str, n: int = 256) -> list[dict]:
    """On held-out guessable prompts (experiments/curation.py): reward, and the share of answers that are a bare 0/1."""
    import torch

    from experiments.curation import planted
    from k15.eval.evaluate import sample_responses
    from k15.rewards.rule import extract_answer, verify
    from k15.tokenizer import prompt_ids

    records = planted(n, "heldout", seed=0, world=cfg.world)
    final = iterations_done(cfg, run_dir)
    points = [(0, None)] + [(i, c) for i, c in checkpoints(run_dir) if i < final] + [(final, "final")]
    out = []
    for iteration, ckpt in points:
        if ckpt == "final":
            model, tok = load_at(cfg, str(run_dir / "rl" / "model"), None)
        else:
            model, tok = load_at(cfg, start_model, ckpt)
        with torch.no_grad():
            responses = sample_responses(model, tok, [prompt_ids(tok, r.prompt) for r in records], cfg.eval.temperature,
                                         cfg.rl.max_new_tokens, cfg.eval.batch_size, cfg.run.seed)
        texts = [tok.decode(r) for r in responses]
        rewards = [float(verify(t, r.answer).reward) for t, r in zip(texts, records)]
        binary = [(extract_answer(t)[0] or "").strip() in ("0", "1") for t in texts]
        think = ["<think>" in t for t in texts]
        out.append({"iteration": iteration, "reward": sum(rewards) / n, "binary_answer_frac": sum(binary) / n,
                    "think_frac": sum(think) / n, "mean_tokens": sum(len(r) for r in responses) / n})
    return out


# ----------------------------------------------------------------------------------------------
# Aggregating


def mean_std(values: list[float]) -> tuple[float, float, int]:
    """Mean, sample standard deviation (0 for one value) and count."""
    values = [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    n = len(values)
    if n == 0:
        return float("nan"), float("nan"), 0
    m = sum(values) / n
    sd = math.sqrt(sum((v - m) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0
    return m, sd, n


def hard(ev: dict) -> float:
    """Mean pass@1 over the upper half of the evaluated levels (levels 4-6 of the default world; with
    an odd number of levels the middle one counts as hard)."""
    levels = ev.get("levels", {})
    upper = sorted(levels, key=int)[len(levels) // 2 :]
    return sum(levels[l]["pass@1"] for l in upper) / len(upper) if upper else float("nan")


def auc(points: list[tuple[float, float]]) -> float:
    """Mean of a curve over its iterations (trapezoids), i.e. the area under it per iteration."""
    points = sorted(points)
    if len(points) < 2:
        return points[0][1] if points else float("nan")
    area = sum((x1 - x0) * (y0 + y1) / 2 for (x0, y0), (x1, y1) in zip(points, points[1:]))
    return area / (points[-1][0] - points[0][0])


def slope(xs: list[float], ys: list[float]) -> float:
    """Least-squares slope of ys on xs."""
    n = len(xs)
    if n < 2:
        return float("nan")
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx if sxx else float("nan")


def read_scalar_series(run_dir: Path, tags: tuple[str, ...], stage: str = "rl") -> dict[str, tuple[list[int], list[float]]]:
    tb = run_dir / "tb" / stage
    if not tb.is_dir():
        return {}
    from k15.eval.curves import read_scalars

    return read_scalars(tb, tags)


SERIES_TAGS = ("reward/reward_mean", "rollout/len_mean", "reward/zero_std_frac", "perf/iteration_s",
               "rollout/tokens_per_s", "perf/rollout_s", "rollout/partial_frac", "perf/elapsed_s")


def run_metrics(run_dir: Path, model: str = "rl") -> dict[str, float]:
    """The numbers of one arm's run: the final eval of `model` (a stage, or init), curve summaries
    (RL runs), training-curve summaries (the stage's TensorBoard run, if it has one)."""
    summary = json.loads((run_dir / "summary.json").read_text())
    ev = summary["eval"]
    start = ev.get("init") or ev.get("sft") or {}
    final = ev[model]
    m = {
        "start_pass@1": start.get("pass@1", float("nan")), "final_pass@1": final["pass@1"],
        "final_hard_pass@1": hard(final), "start_tokens": start.get("mean_tokens", float("nan")),
        "final_tokens": final["mean_tokens"], "stage_wall_s": summary["stages"].get(model, {}).get("wall_s", float("nan")),
    }
    if model not in ("rl", "init") and "init" in ev:  # a long2short method against the long model it started from
        saved = m["start_tokens"] - m["final_tokens"]
        # a seed whose answers did not get shorter has no finite cost: inf shows in the table instead of vanishing
        m["cost_per_token_saved"] = (m["start_pass@1"] - m["final_pass@1"]) / saved if saved > 0 else float("inf")
    levels = final.get("levels", {})
    total = sum(l["samples"] for l in levels.values())
    m["final_long_share"] = sum(l["long_share"] * l["samples"] for l in levels.values()) / total if total else float("nan")
    start_levels = start.get("levels", {})
    start_total = sum(l["samples"] for l in start_levels.values())
    if start_total:
        m["start_long_share"] = sum(l["long_share"] * l["samples"] for l in start_levels.values()) / start_total
    for level, l in levels.items():
        m[f"final_pass@1_L{level}"] = l["pass@1"]
        m[f"final_tokens_L{level}"] = l["mean_tokens"]
        if level in start.get("levels", {}):
            m[f"start_pass@1_L{level}"] = start["levels"][level]["pass@1"]
            m[f"start_tokens_L{level}"] = start["levels"][level]["mean_tokens"]
            m[f"tokens_growth_L{level}"] = l["mean_tokens"] - start["levels"][level]["mean_tokens"]
    curve_path = run_dir / "curve.json"
    if model == "rl" and curve_path.is_file():
        curve = json.loads(curve_path.read_text())
        points = curve["heldout"]
        m["auc_pass@1"] = auc([(p["iteration"], p["pass@1"]) for p in points])
        early = [p for p in points if p["iteration"] > 0]
        if len(early) > 1:  # the first checkpoint after the start (the final one is not early)
            m["early_pass@1"] = early[0]["pass@1"]
        m["auc_hard_pass@1"] = auc([(p["iteration"], hard(p)) for p in points])
        m["slope_pass@1_per_token"] = slope([p["mean_tokens"] for p in points], [p["pass@1"] for p in points])
        for level in points[0].get("levels", {}):
            have = [p["levels"][level] for p in points if level in p.get("levels", {})]
            m[f"slope_L{level}"] = slope([h["mean_tokens"] for h in have], [h["pass@1"] for h in have])
        if curve.get("guess"):
            g = curve["guess"]
            m["guess_reward_start"], m["guess_reward_final"] = g[0]["reward"], g[-1]["reward"]
            m["guess_binary_start"], m["guess_binary_final"] = g[0]["binary_answer_frac"], g[-1]["binary_answer_frac"]
            m["guess_think_final"] = g[-1]["think_frac"]
    series = read_scalar_series(run_dir, SERIES_TAGS, model)
    if "reward/reward_mean" in series:
        r = series["reward/reward_mean"][1]
        m["train_reward_first5"], m["train_reward_last5"] = sum(r[:5]) / len(r[:5]), sum(r[-5:]) / len(r[-5:])
    if "reward/zero_std_frac" in series:
        z = series["reward/zero_std_frac"][1]
        m["zero_std_frac_mean"] = sum(z) / len(z)
    if "perf/iteration_s" in series:
        t = series["perf/iteration_s"][1]
        m["iteration_s_mean"] = sum(t) / len(t)
        m["iterations"] = len(t)
    if "perf/elapsed_s" in series:  # the training clock at the last iteration (rl.max_seconds arms)
        m["train_s"] = series["perf/elapsed_s"][1][-1]
    if "rollout/tokens_per_s" in series:
        t = series["rollout/tokens_per_s"][1]
        m["rollout_tokens_per_s"] = sum(t) / len(t)
    if "rollout/tokens_per_s" in series and "perf/rollout_s" in series:  # tokens generated per iteration
        generated = [a * b for a, b in zip(series["rollout/tokens_per_s"][1], series["perf/rollout_s"][1])]
        m["tokens_per_iteration"], m["max_tokens_per_iteration"] = sum(generated) / len(generated), max(generated)
    return m


def collect(out: Path, experiment: str) -> dict[str, dict[int, ArmRun]]:
    """{arm: {seed: run}} for the seeds whose runs finished."""
    arms: dict[str, dict[int, ArmRun]] = {}
    for seed_dir in sorted((out / experiment).glob("seed*")):
        mapping_path = seed_dir / "arms.json"
        if not mapping_path.is_file():
            continue
        seed = int(seed_dir.name.removeprefix("seed"))
        for arm, entry in json.loads(mapping_path.read_text()).items():
            run = arm_run(entry)
            summary = run.dir / "summary.json"
            if summary.is_file() and run.model in json.loads(summary.read_text())["eval"]:
                arms.setdefault(arm, {})[seed] = run
    return arms


def aggregate(out: Path, experiment: str) -> dict[str, dict[str, tuple[float, float, int]]]:
    """{arm: {metric: (mean, std, n seeds)}}."""
    table = {}
    for arm, runs in collect(out, experiment).items():
        per_run = [run_metrics(r.dir, r.model) for _, r in sorted(runs.items())]
        keys = sorted({k for m in per_run for k in m})
        table[arm] = {k: mean_std([m.get(k, float("nan")) for m in per_run]) for k in keys}
    return table


ALPHA = 0.05  # the level of the verdicts' two-sided Welch t-test


def welch(ref: tuple[float, float, int], arm: tuple[float, float, int]) -> tuple[float, float, float]:
    """Difference of means (arm - ref), Welch's t and its two-sided p-value (Welch-Satterthwaite degrees
    of freedom; the t distribution through mpmath's regularized incomplete beta, which sympy brings)."""
    import mpmath

    (m0, s0, n0), (m1, s1, n1) = ref, arm
    v0, v1 = s0 ** 2 / n0, s1 ** 2 / n1
    diff = m1 - m0
    if v0 + v1 == 0:  # no spread at all: any difference is certain, none is none
        return diff, math.copysign(math.inf, diff) if diff else 0.0, 0.0 if diff else 1.0
    t = diff / math.sqrt(v0 + v1)
    df = (v0 + v1) ** 2 / (v0 ** 2 / (n0 - 1) + v1 ** 2 / (n1 - 1))
    p = float(mpmath.betainc(df / 2, 0.5, 0, df / (df + t * t), regularized=True))
    return diff, t, p


def compare(ref: tuple[float, float, int], arm: tuple[float, float, int], expect: str) -> str:
    """The verdict for one metric: Welch's two-sided t-test of the difference of means at level ALPHA.
    "similar" agrees when no difference is detected, which with few seeds is weak evidence of none."""
    (m0, _, n0), (m1, _, n1) = ref, arm
    if min(n0, n1) < 2 or any(math.isnan(v) for v in (m0, m1)):
        return "inconclusive (fewer than 2 seeds)"
    diff, _, p = welch(ref, arm)
    said = f"({diff:+.3g}, Welch p={p:.2g})"
    separated = p < ALPHA and abs(diff) > 1e-12  # float noise between equal means is no difference
    if expect == "similar":
        return f"agrees (no difference at the {ALPHA:.0%} level) {said}" if not separated else f"differs {said}"
    want = 1 if expect == "higher" else -1
    if not separated:
        return f"not distinguishable {said}"
    return f"agrees {said}" if diff * want > 0 else f"opposite {said}"


# ----------------------------------------------------------------------------------------------
# Plotting


def mean_curve(series: list[tuple[list[float], list[float]]]):
    """Mean and min/max over seeds at the x values all curves share."""
    common = sorted(set.intersection(*(set(xs) for xs, _ in series))) if series else []
    rows = [[dict(zip(xs, ys))[x] for x in common] for xs, ys in series]
    mean = [sum(col) / len(col) for col in zip(*rows)]
    lo = [min(col) for col in zip(*rows)]
    hi = [max(col) for col in zip(*rows)]
    return common, mean, lo, hi


def plot_finding(out: Path, experiment: str, png: Path, smooth: int = 5) -> Path | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    arms = collect(out, experiment)
    if not arms:
        return None
    label, experiment = experiment, experiment_of(out, experiment)
    if BY_EXPERIMENT.get(experiment) and BY_EXPERIMENT[experiment].from_long_model:
        if label != experiment:
            return None  # a variant: drawn in the experiment's own figure
        # variants of the methods (other results directories of this experiment) join the same scatter
        for other in sorted(d.name for d in out.iterdir() if d.is_dir() and d.name not in (label, "pool")):
            if experiment_of(out, other) == experiment:
                arms |= {f"{arm} ({other.removeprefix(experiment + '_')})": runs
                         for arm, runs in collect(out, other).items() if arm != "long"}
        return plot_tradeoff(out, label, arms, png)
    guess = experiment == "curation"
    panels = [("held-out pass@1", "pass@1"), ("held-out pass@1, upper half of levels", "hard"), ("held-out tokens per answer", "tokens"),
              ("train reward (smoothed)", "reward/reward_mean"), ("train response length (smoothed)", "rollout/len_mean")]
    if guess:
        panels.insert(3, ("guessable prompts: reward", "guess"))
    if experiment in ("length_accuracy", "model_size"):
        panels.insert(3, ("pass@1 vs tokens (checkpoints)", "scatter"))
    if experiment == "length_accuracy":
        panels.append(("held-out tokens per level (first arm)", "levels"))
    cols = (len(panels) + 1) // 2
    fig, grid = plt.subplots(2, cols, figsize=(3.4 * cols, 5.6), dpi=80, squeeze=False)
    axes = list(grid.flat)
    for ax in axes[len(panels):]:
        ax.axis("off")
    for color, (arm, runs) in zip(plt.rcParams["axes.prop_cycle"].by_key()["color"], arms.items()):
        curves = [json.loads((r.dir / "curve.json").read_text()) for r in runs.values() if (r.dir / "curve.json").is_file()]
        tb = [read_scalar_series(r.dir, SERIES_TAGS) for r in runs.values()]
        arm_label = f"{arm} (n={len(runs)})"
        for ax, (title, key) in zip(axes, panels):
            if key in ("pass@1", "hard", "tokens") and curves:
                get = {"pass@1": lambda p: p["pass@1"], "hard": hard, "tokens": lambda p: p["mean_tokens"]}[key]
                xs, mean, lo, hi = mean_curve([([p["iteration"] for p in c["heldout"]], [get(p) for p in c["heldout"]]) for c in curves])
                ax.plot(xs, mean, color=color, marker="o", ms=3, label=arm_label)
                ax.fill_between(xs, lo, hi, color=color, alpha=0.15)
            elif key == "guess" and curves and all(c.get("guess") for c in curves):
                xs, mean, lo, hi = mean_curve([([p["iteration"] for p in c["guess"]], [p["reward"] for p in c["guess"]]) for c in curves])
                ax.plot(xs, mean, color=color, marker="o", ms=3, label=arm_label)
                ax.fill_between(xs, lo, hi, color=color, alpha=0.15)
            elif key == "scatter" and curves:
                for c in curves:
                    ax.plot([p["mean_tokens"] for p in c["heldout"]], [p["pass@1"] for p in c["heldout"]], color=color,
                            marker="o", ms=3, lw=0.8, alpha=0.7)
                ax.set_xlabel("tokens per answer")
            elif key == "levels" and curves and arm == next(iter(arms)):
                cmap = plt.get_cmap("viridis")
                levels = sorted(curves[0]["heldout"][0]["levels"], key=int)
                for i, level in enumerate(levels):
                    xs, mean, _, _ = mean_curve([([p["iteration"] for p in c["heldout"]],
                                                   [p["levels"][level]["mean_tokens"] for p in c["heldout"]]) for c in curves])
                    ax.plot(xs, mean, color=cmap(i / max(1, len(levels) - 1)), marker="o", ms=2, label=f"L{level}")
                ax.legend(fontsize=6, ncol=2)
            elif key in SERIES_TAGS:
                have = [s[key] for s in tb if key in s]
                if have:
                    xs, mean, lo, hi = mean_curve(have)
                    k = max(1, smooth)
                    sm = [sum(mean[max(0, i - k + 1): i + 1]) / len(mean[max(0, i - k + 1): i + 1]) for i in range(len(mean))]
                    ax.plot(xs, sm, color=color, label=arm_label, lw=1.2)
            ax.set_title(title, fontsize=9)
            ax.grid(alpha=0.3)
            ax.tick_params(labelsize=7)
            if key != "scatter":
                ax.set_xlabel("RL iteration", fontsize=8)
    axes[0].legend(fontsize=7)
    finding = BY_EXPERIMENT.get(experiment)
    fig.suptitle(f"{finding.id + ': ' if finding else ''}{label} — mean over seeds, band = min..max", fontsize=9)
    return save_figure(fig, png)


def save_figure(fig, png: Path) -> Path:
    """Lay out, write and close a figure (closing keeps a report of many figures from piling them up)."""
    import matplotlib.pyplot as plt

    from k15.eval.plots import save_figure as write

    fig.tight_layout()
    write(fig, png)
    plt.close(fig)
    return png


def plot_tradeoff(out: Path, label: str, arms: dict[str, dict[int, ArmRun]], png: Path) -> Path:
    """Held-out pass@1 against tokens per answer, one point per seed and a mean with its spread per
    arm (the paper's Fig. 7): the most token-efficient method sits at the upper left."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.2, 4.0), dpi=80)
    for color, (arm, runs) in zip(plt.rcParams["axes.prop_cycle"].by_key()["color"], arms.items()):
        per_seed = [run_metrics(r.dir, r.model) for r in runs.values()]
        xs, ys = [m["final_tokens"] for m in per_seed], [100 * m["final_pass@1"] for m in per_seed]
        ax.scatter(xs, ys, color=color, s=12, alpha=0.5)
        (mx, sx, _), (my, sy, _) = mean_std(xs), mean_std(ys)
        ax.errorbar([mx], [my], xerr=[sx], yerr=[sy], color=color, marker="o", ms=6, capsize=3, label=f"{arm} (n={len(runs)})")
    ax.set_xlabel("held-out tokens per answer", fontsize=8)
    ax.set_ylabel("held-out pass@1 (%)", fontsize=8)
    ax.grid(alpha=0.3)
    ax.tick_params(labelsize=7)
    ax.legend(fontsize=7)
    finding = BY_EXPERIMENT.get(experiment_of(out, label))
    ax.set_title(f"{finding.id + ': ' if finding else ''}{label} — seeds (dots), mean ± std", fontsize=9)
    return save_figure(fig, png)


# ----------------------------------------------------------------------------------------------
# Reporting

SHOWN = [("final_pass@1", "pass@1", 100), ("final_hard_pass@1", "pass@1 hard", 100), ("early_pass@1", "pass@1, 1st checkpoint", 100),
         ("auc_pass@1", "mean pass@1 along run", 100),
         ("final_tokens", "tokens", 1), ("final_long_share", "long CoT", 100), ("train_reward_last5", "train reward (last 5)", 1),
         ("zero_std_frac_mean", "zero-std groups", 1)]
EXTRA_SHOWN = {
    "length_accuracy": [("slope_pass@1_per_token", "slope, points/token", 100)],
    "partial_rollouts": [("tokens_per_iteration", "gen. tokens/iter", 1), ("max_tokens_per_iteration", "max gen. tokens/iter", 1),
                         ("iteration_s_mean", "s/iteration", 1),
                         ("stage_wall_s", "RL wall s", 1)],
    "partial_rollouts_wallclock": [("iterations", "iterations", 1), ("train_s", "RL train s", 1),
                                   ("tokens_per_iteration", "gen. tokens/iter", 1), ("iteration_s_mean", "s/iteration", 1)],
    "curation": [("guess_reward_start", "guess reward start", 1), ("guess_reward_final", "guess reward end", 1),
                 ("guess_binary_start", "bare 0/1 answers start", 1), ("guess_binary_final", "bare 0/1 answers end", 1), ("guess_think_final", "thinks on guess prompts end", 1)],
    "model_size": [("slope_pass@1_per_token", "slope, points/token", 100), ("start_pass@1", "SFT pass@1", 100)],
    "long2short": [("cost_per_token_saved", "points lost per token cut", 100)],
}


def fmt(value: tuple[float, float, int], scale: float) -> str:
    m, s, n = value
    if n == 0 or math.isnan(m):
        return "–"
    digits = (1 if abs(m * scale) >= 10 else 2) if scale == 100 else (1 if abs(m * scale) >= 1 else 3)
    return f"{m * scale:.{digits}f} ± {s * scale:.{digits}f}"


def experiment_of(out: Path, label: str) -> str:
    """The experiment a results directory holds (its name, unless run with --label)."""
    meta = out / label / "meta.json"
    return json.loads(meta.read_text())["experiment"] if meta.is_file() else label


def finding_table(out: Path, label: str) -> str:
    table = aggregate(out, label)
    experiment = experiment_of(out, label)
    if not table:
        return "_No finished runs yet._\n"
    columns = SHOWN + EXTRA_SHOWN.get(experiment, [])
    columns = [c for c in columns if any(c[0] in t for t in table.values())]
    start = next(iter(table.values()))
    lines = [f"Held-out pass@1 in % at T=1 (mean ± sample std over seeds); the start model: "
             f"{fmt(start.get('start_pass@1', (float('nan'), 0, 0)), 100)}% pass@1, "
             f"{fmt(start.get('start_tokens', (float('nan'), 0, 0)), 1)} tokens, "
             f"{fmt(start.get('start_long_share', (float('nan'), 0, 0)), 100)}% long CoT.", "",
             "| arm | seeds | " + " | ".join(c[1] for c in columns) + " |",
             "|---|---|" + "---|" * len(columns)]
    for arm, metrics in table.items():
        n = max(v[2] for v in metrics.values())
        lines.append(f"| {arm} | {n} | " + " | ".join(fmt(metrics.get(k, (float('nan'), 0, 0)), s) for k, _, s in columns) + " |")
    if experiment in ("length_accuracy", "model_size"):
        lines += level_table(table)
    finding = BY_EXPERIMENT.get(experiment)
    if finding and finding.expect and finding.reference in table:
        lines += ["", f"Against `{finding.reference}` (Welch's two-sided t-test over seeds, level {ALPHA:.0%}):", ""]
        for arm, expects in finding.expect.items():
            if arm not in table:
                continue
            for metric, want in expects.items():
                if metric in table[arm] and metric in table[finding.reference]:
                    verdict = compare(table[finding.reference][metric], table[arm][metric], want)
                    lines.append(f"- `{arm}` {metric} expected {want}: {verdict}")
    also = [(ref, arm, metric, want) for ref, arm, metric, want in (finding.also if finding else [])
            if metric in table.get(ref, {}) and metric in table.get(arm, {})]
    if also:
        lines += ["", "Between other arms:", ""]
        for ref, arm, metric, want in also:
            lines.append(f"- `{arm}` {metric} expected {want} than `{ref}`: {compare(table[ref][metric], table[arm][metric], want)}")
    return "\n".join(lines) + "\n"


def level_table(table: dict) -> list[str]:
    """Per level: start and final tokens and pass@1, and the slope of pass@1 on tokens over checkpoints."""
    lines = []
    for arm, metrics in table.items():
        levels = sorted({k.rsplit("_L", 1)[1] for k in metrics if k.startswith("final_tokens_L")}, key=int)
        lines += ["", f"Per level, `{arm}` (tokens per answer and pass@1 in %, start -> end of RL; slope of pass@1 on tokens "
                      "over the checkpoints, in points per token):", "",
                  "| level | tokens start | tokens end | growth | pass@1 start | pass@1 end | slope |", "|---|---|---|---|---|---|---|"]
        nan = (float("nan"), 0, 0)
        for level in levels:
            get = lambda k: metrics.get(f"{k}_L{level}", nan)
            lines.append(f"| L{level} | {fmt(get('start_tokens'), 1)} | {fmt(get('final_tokens'), 1)} | "
                         f"{fmt(get('tokens_growth'), 1)} | {fmt(get('start_pass@1'), 100)} | {fmt(get('final_pass@1'), 100)} | "
                         f"{fmt(get('slope'), 100)} |")
    return lines


BEGIN, END = "<!-- BEGIN {0} (tools/findings.py report) -->", "<!-- END {0} -->"


def fill(doc: str, experiment: str, text: str) -> str:
    """Replace the generated block of `experiment` in the document, if it has one."""
    begin, end = BEGIN.format(experiment), END.format(experiment)
    pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end), re.DOTALL)
    return pattern.sub(lambda _: f"{begin}\n{text}{end}", doc)


def cmd_report(args) -> int:
    """Per finding: the table and verdicts into docs/results.md, a figure, and the aggregated numbers
    (mean, sample std, seeds of every metric and arm, and the runs they came from) into
    docs/findings/<experiment>.json, committed, so every number of the report traces to a file."""
    out, doc_path, figures, data = Path(args.out), Path(args.doc), Path(args.figures), Path(args.data)
    doc = doc_path.read_text() if doc_path.is_file() else ""
    labels = [d.name for d in sorted(out.iterdir()) if d.is_dir() and d.name != "pool" and list(d.glob("seed*/arms.json"))]
    if args.labels:
        wanted = args.labels.split(",")
        if missing := [w for w in wanted if w not in labels]:
            raise SystemExit(f"error: --labels: no results under {out} for {', '.join(missing)}")
        labels = wanted
    for experiment in labels:
        text = finding_table(out, experiment)
        png = plot_finding(out, experiment, figures / f"{experiment}.png")
        print(f"## {experiment}\n{text}" + (f"plot: {png}\n" if png else ""))
        summary = {arm: {k: list(v) for k, v in m.items()} for arm, m in aggregate(out, experiment).items()}
        (out / experiment / "aggregate.json").write_text(json.dumps(summary, indent=2) + "\n")
        runs = {arm: {seed: str(r.dir) for seed, r in sorted(by_seed.items())} for arm, by_seed in collect(out, experiment).items()}
        data.mkdir(parents=True, exist_ok=True)
        def number(v):  # strict JSON: nan as null, an infinite mean (a seed that cut no tokens) as "inf"
            if isinstance(v, float) and not math.isfinite(v):
                return None if math.isnan(v) else ("inf" if v > 0 else "-inf")
            return v
        (data / f"{experiment}.json").write_text(json.dumps(
            {"metrics": {arm: {k: dict(zip(("mean", "std", "seeds"), map(number, v))) for k, v in m.items()}
                         for arm, m in summary.items()},
             "verdicts": [line[2:] for line in text.splitlines() if line.startswith("- `")], "runs": runs},
            indent=2, allow_nan=False) + "\n")
        doc = fill(doc, experiment, text)
    if doc:
        doc_path.write_text(doc)
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="run findings x seeds")
    r.add_argument("--base", help="the base model (an SFT export) every arm starts from")
    r.add_argument("--findings", required=True, help="comma-separated experiment names")
    r.add_argument("--seeds", default="0,1,2")
    r.add_argument("--out", default="runs/findings")
    r.add_argument("--jobs", type=int, default=1)
    r.add_argument("--checkpoint-every", type=int, default=10)
    r.add_argument("--borrow", action="append", default=[], metavar="ARM=LABEL:ARM",
                   help="take this arm's runs from another results directory instead of running it (e.g. tiny=length_accuracy:plain)")
    r.add_argument("--arm-base", action="append", default=[], metavar="ARM=DIR",
                   help="this arm's RL starts from DIR (e.g. small=POOL/sft/model: more RL seeds of model_size's larger model)")
    r.add_argument("--long-from", metavar="LABEL:ARM",
                   help="long2short: each seed shortens the RL model of that seed's run of LABEL:ARM (e.g. length_accuracy:plain)")
    r.add_argument("--only", help="comma-separated arms to run (with --borrow, the others may come from another directory)")
    r.add_argument("--label", help="results directory name under --out (default: the experiment's name; one experiment only)")
    r.add_argument("overrides", nargs="*", help="key=value overrides for every arm")
    o = sub.add_parser("one", help="(internal) run one pool directory")
    o.add_argument("run_dir")
    o.add_argument("--guess", action="store_true")
    rep = sub.add_parser("report", help="aggregate, plot, fill docs/results.md")
    rep.add_argument("--out", default="runs/findings")
    rep.add_argument("--doc", default="docs/results.md")
    rep.add_argument("--figures", default="docs/figures")
    rep.add_argument("--data", default="docs/findings", help="where each finding's aggregated numbers go (JSON)")
    rep.add_argument("--labels", help="comma-separated results directories to report (default: every one under --out); "
                     "a directory holding only an arm borrowed by others would otherwise rewrite its finding's table")
    args = p.parse_args(argv)
    return {"run": cmd_run, "one": cmd_one, "report": cmd_report}[args.cmd](args)


if __name__ == "__main__":
    raise SystemExit(main())
