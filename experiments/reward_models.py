"""Classic RM vs chain-of-thought RM (paper §2.3.5): their spot check, and each as the RL reward.

Shared by the three arms: pretrain -> SFT -> rm_data -> classic_rm -> cot_rm. Each RM's agreement with
the exact checker on held-out examples (accuracy, precision / recall on wrong answers, unparsed
verdicts) goes to shared/summary.json; the paper reports 84.4% (Classic) vs 98.5% (CoT). Then each arm
runs RL on free-form questions (runs/_data/freeform) rewarded by `checker` (the ground truth),
`classic_rm` or `cot_rm`, logging reward/rm_disagreement, and is evaluated by the checker on held-out
free-form questions.
"""

from pathlib import Path

from k15.config import ExperimentConfig, WorldConfig
from k15.data.prompts import freeform_prompt_set, write_prompt_set
from k15.write_once import write_once
from experiments._ablation import ablation_base

DATA_DIR = Path(__file__).resolve().parent.parent / "runs" / "_data" / "freeform"  # runs/ is not versioned
LEVELS = range(1, 5)  # the RMs' training questions (reward_model.data levels 1-4)
N_TRAIN, N_HELDOUT = 2048, 256


def prompt_sets(data_dir: Path = DATA_DIR) -> tuple[Path, Path]:
    """(train, held-out) free-form prompt sets as JSONL, written once (they are deterministic)."""
    world = WorldConfig()
    for split, n in (("train", N_TRAIN), ("heldout", N_HELDOUT)):
        records = lambda: freeform_prompt_set(n, split, LEVELS, world.heldout_fraction, seed=3)  # noqa: E731
        write_once(data_dir / split, {"n": n, "levels": list(LEVELS)}, lambda tmp: write_prompt_set(records(), tmp / "prompts.jsonl"))
    return data_dir / "train" / "prompts.jsonl", data_dir / "heldout" / "prompts.jsonl"


def config() -> dict[str, ExperimentConfig]:
    train, heldout = prompt_sets()
    arms = {}
    for arm in ("checker", "classic_rm", "cot_rm"):
        cfg = ablation_base()  # 30 RL iterations x 16 prompts x 8 samples
        cfg.stages = ["pretrain", "sft", "rm_data", "classic_rm", "cot_rm", "rl", "eval"]
        cfg.reward_model.init_from = cfg.reward_model.policy = "sft"
        cfg.rl.prompt_path, cfg.eval.prompt_path = str(train), str(heldout)
        cfg.rl.checkpoint_every_n_iterations = 0
        cfg.eval.models = ["sft", "rl"]
        if arm != "checker":
            cfg.rewards.rm.kind, cfg.rewards.rm.path = arm, arm
        arms[arm] = cfg
    return arms
