"""Helpers for the tests that run the real RL stage on a tiny model (see test_rl_smoke.py)."""

import json

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from k15.config import apply_overrides, base
from k15.pipeline import run_pipeline
from k15.runs import create_run_dir

MODEL = ["model.hidden_size=48", "model.num_layers=2", "model.num_heads=2", "model.num_kv_heads=2",
         "model.intermediate_size=96", "model.max_seq_len=48", "world.max_level=1", "world.heldout_fraction=0.05",
         "trainer.progress=false", "run.threads=1"]
SFT = ["stages=[sft]", "sft.max_steps=70", "sft.batch_size=64", "sft.num_examples=4000", "sft.long_fraction=0",
       "sft.optim.lr=3e-3", "sft.optim.warmup_steps=5", "trainer.sample_every_n_steps=0"]


def run(overrides, directory):
    cfg = apply_overrides(base(), MODEL + overrides + [f"run.dir={directory}"])
    cfg.run.name = "rl-smoke"
    run_dir = create_run_dir(cfg)
    run_pipeline(cfg, run_dir)
    return run_dir


def write_always7(path, difficulty=lambda a, b: 1, pass_rate=lambda a, b: None):
    """Prompts a+b= (a + b <= 9) whose rewarded answer is always "7": one global behaviour to learn."""
    with path.open("w") as f:
        for a in range(10):
            for b in range(10 - a):
                row = {"id": f"{a}+{b}", "prompt": f"{a}+{b}=", "answer": "7", "difficulty": difficulty(a, b), "domain": "arithmetic"}
                if pass_rate(a, b) is not None:
                    row["pass_rate"] = pass_rate(a, b)
                f.write(json.dumps(row) + "\n")
    return path


def events(run_dir) -> EventAccumulator:
    acc = EventAccumulator(str(run_dir / "tb" / "rl"), size_guidance={"scalars": 0, "histograms": 0})
    acc.Reload()
    return acc


def scalars(run_dir) -> dict[str, dict[int, float]]:
    acc = events(run_dir)
    return {tag: {e.step: e.value for e in acc.Scalars(tag)} for tag in acc.Tags()["scalars"]}
