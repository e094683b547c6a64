"""Ablations: several named arms of one experiment, run side by side in one directory.

Arms usually differ only in a late stage (the RL loss, the sampler, ...). Stages whose config is the
same in every arm, and whose inputs are the same, run once in EXPERIMENT_DIR/shared; every arm then
starts from those exports, in EXPERIMENT_DIR/<arm>. results.json gathers the arms' summaries.
"""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path

from k15.config import RM_STAGES, VISION_STAGES, ExperimentConfig, to_yaml
from k15.eval.curves import overlay
from k15.runs import write_text_atomic

# Which config sections each stage reads, beyond run.seed and the stages before it.
STAGE_SECTIONS = {
    "pretrain": ("model", "world", "trainer", "pretrain"),
    "sft": ("model", "world", "trainer", "sft", "data"),
    "rl": ("model", "world", "trainer", "rl", "vlm", "data", "rewards"),
    **{stage: ("model", "world", "trainer", "vlm", stage) for stage in VISION_STAGES},
    **{stage: ("model", "world", "trainer", "data", "reward_model") for stage in RM_STAGES},
}


def stage_fingerprint(cfg: ExperimentConfig, stage: str) -> str:
    sections = {name: getattr(cfg, name) for name in STAGE_SECTIONS.get(stage, ())}
    return f"{stage}|seed={cfg.run.seed}|" + "|".join(f"{k}={v!r}" for k, v in sections.items())


def shared_stages(arms: dict[str, ExperimentConfig]) -> list[str]:
    """The longest run of leading training stages that every arm runs with the same config."""
    configs = list(arms.values())
    if len(configs) < 2:
        return []
    shared = []
    for i, stage in enumerate(configs[0].stages):
        if stage not in STAGE_SECTIONS:
            break
        if any(len(c.stages) <= i or c.stages[i] != stage for c in configs):
            break
        if len({stage_fingerprint(c, stage) for c in configs}) != 1:
            break
        shared.append(stage)
    return shared


def run_arms(arms: dict[str, ExperimentConfig], experiment_dir: Path) -> dict[str, dict]:
    from k15.callbacks.preemption import Preempted

    try:
        return _run_arms(arms, experiment_dir)
    except Preempted:
        # the line just printed names one arm's directory, but an ablation's arms need the shared
        # stages' exports, which --resume of a single directory does not hand over
        print(f"note: {experiment_dir} is an ablation: --resume does not continue it; run the experiment "
              "again (its finished arms are not reused)", file=sys.stderr, flush=True)
        raise


def _run_arms(arms: dict[str, ExperimentConfig], experiment_dir: Path) -> dict[str, dict]:
    from k15.pipeline import console, run_pipeline  # heavy imports only when something runs

    shared = shared_stages(arms)
    exports: dict[str, Path] = {}
    if shared:
        first = copy.deepcopy(next(iter(arms.values())))
        first.stages = shared
        first.run.name = f"{first.run.name.rsplit('/', 1)[0]}/shared"
        shared_dir = experiment_dir / "shared"
        shared_dir.mkdir(parents=True, exist_ok=False)
        write_text_atomic(shared_dir / "config.yaml", to_yaml(first))
        console.print(f"stages shared by all arms: {', '.join(shared)}")
        exports = {k: Path(v) for k, v in run_pipeline(first, shared_dir)["exports"].items() if k != "init"}
    results = {}
    for arm, cfg in arms.items():
        cfg = copy.deepcopy(cfg)
        cfg.stages = cfg.stages[len(shared) :]
        arm_dir = experiment_dir / arm
        arm_dir.mkdir(parents=True, exist_ok=False)
        write_text_atomic(arm_dir / "config.yaml", to_yaml(cfg))
        results[arm] = run_pipeline(cfg, arm_dir, exports)
        write_text_atomic(experiment_dir / "results.json", json.dumps(results, indent=2) + "\n")
    curves = overlay(experiment_dir)
    if curves:
        console.print(f"arms overlaid: {curves}")
    return results
