"""A quick look at both RMs on the spot-check set: make data, train each RM, judge the held-out examples.

    python -m k15.reward_models.smoke OUT [--init-from SFT_DIR] [--policy DIR] [--rms classic,cot] [--steps N]
                                          [--batch-size B] [--lr LR] [--train-examples N] [--spotcheck-examples N]
                                          [--seed S] [--threads T]

Without --init-from both RMs start from a new decoder of the default size (no pretraining at all).
Prints and writes OUT/spotcheck.json: per RM, accuracy against the checker, precision / recall on
wrong answers, unparsed verdicts, training seconds; and per kind of response, each RM's accuracy.
A measurement to size defaults, not a test: the experiment comparing the RMs over seeds is separate.
"""

from __future__ import annotations

import argparse
import json
import time
from collections import defaultdict
from pathlib import Path

import torch

from k15.config import ModelConfig
from k15.models.decoder import build_decoder, export
from k15.quiet import quiet_libraries
from k15.reward_models.classic import load_classic_rm
from k15.reward_models.config import RewardModelConfig
from k15.reward_models.cot import load_cot_rm
from k15.reward_models.data import read_examples
from k15.reward_models.spotcheck import agreement
from k15.reward_models.stages import run_classic_rm, run_cot_rm, run_rm_data
from k15.tokenizer import build_synthetic_tokenizer


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--init-from", type=Path, default=None)
    ap.add_argument("--policy", type=Path, default=None, help="rollouts from this policy (default: --init-from)")
    ap.add_argument("--rms", default="classic,cot", help="which RMs to train")
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--lr", type=float, default=None)
    ap.add_argument("--train-examples", type=int, default=8000)
    ap.add_argument("--spotcheck-examples", type=int, default=400)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=0)
    args = ap.parse_args(argv)
    quiet_libraries()
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = RewardModelConfig()
    cfg.data.train_examples, cfg.data.spotcheck_examples = args.train_examples, args.spotcheck_examples
    for t in (cfg.classic, cfg.cot):
        t.max_steps, t.batch_size = args.steps, args.batch_size
        if args.lr:
            t.optim.lr = args.lr
    init = args.init_from
    if init is None:  # a new decoder, saved so both RMs start from the same weights
        tok = build_synthetic_tokenizer()
        torch.manual_seed(args.seed)
        init = export(build_decoder(ModelConfig(max_seq_len=cfg.max_len), tok), tok, args.out / "scratch")
    policy = args.policy or args.init_from
    started = time.perf_counter()
    data = run_rm_data(cfg, args.out / "rm_data", args.seed, 0.1, policy)
    spot = read_examples(data / "spotcheck.jsonl")
    labels = [ex.label for ex in spot]
    report = {"data_s": round(time.perf_counter() - started, 1),
              "config": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}}
    for name, run in (("classic", run_classic_rm), ("cot", run_cot_rm)):
        if name not in args.rms.split(","):
            continue
        started = time.perf_counter()
        model_dir = run(cfg, data, init, args.out / f"{name}_rm", args.seed)
        train_s = time.perf_counter() - started
        rm = load_classic_rm(model_dir) if name == "classic" else load_cot_rm(
            model_dir, max_new_tokens=cfg.judge_max_new_tokens, batch_size=cfg.judge_batch_size)
        verdicts = rm.judge(spot) if name == "classic" else [j.correct for j in rm.judge(spot)]
        by_kind = defaultdict(list)
        for ex, v in zip(spot, verdicts):
            kind = "rollout" if ex.source == "rollout" else ("correct" if ex.label else ex.form.split(":")[0])
            by_kind[kind].append(bool(v) == ex.label)
        report[name] = agreement(labels, verdicts) | {
            "train_s": round(train_s, 1),
            "by_kind": {k: round(sum(v) / len(v), 3) for k, v in sorted(by_kind.items())},
        }
        print(name, json.dumps(report[name]), flush=True)
    (args.out / "spotcheck.json").write_text(json.dumps(report, indent=2) + "\n")
    return report


if __name__ == "__main__":
    main()
