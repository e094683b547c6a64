"""The reward_models experiment from the command line at toy size: both RMs' spot checks in the shared
summary.json, then RL rewarded by the checker, the Classic RM and the CoT RM, one arm each."""

import json
import os
import subprocess
import sys

from k15.reward_models.classic import load_classic_rm
from k15.reward_models.cot import load_cot_rm
from k15.reward_models.data import read_examples
from tests.tiny import TINY
from tools.rm_report import report

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
# A few examples and steps of each RM, on the tiny pretrain + SFT of the pipeline smoke test.
TOY_RM = [o for o in TINY if not o.startswith(("stages=", "pretrain.max_steps", "sft.max_steps"))] + [
    "run.threads=1", "pretrain.max_steps=10", "sft.max_steps=10",
    "reward_model.data.train_examples=24", "reward_model.data.spotcheck_examples=8",
    "reward_model.data.rollout_max_new_tokens=8", "reward_model.data.max_level=2",
    "reward_model.classic.max_steps=2", "reward_model.classic.batch_size=8",
    "reward_model.cot.max_steps=2", "reward_model.cot.batch_size=8",
    "reward_model.max_len=160", "reward_model.judge_max_new_tokens=8",
    "rl.iterations=2", "rl.prompts_per_iteration=2", "rl.samples_per_prompt=2", "rl.max_new_tokens=24",
    "eval.max_new_tokens=24",
    "rewards.rm.probe=false", "rewards.rm.max_new_tokens=8",  # two steps teach a CoT RM no verdict yet
]


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "experiments.run", "reward_models", *args], env=ENV,
                          capture_output=True, text=True, timeout=300)


def test_both_rms_train_are_spot_checked_and_reward_rl(tmp_path):
    experiment = tmp_path / "run"
    proc = run(*TOY_RM, f"run.dir={experiment}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    run_dir = experiment / "shared"  # the stages every arm shares
    summary = json.loads((run_dir / "summary.json").read_text())
    assert {"pretrain", "sft", "rm_data", "classic_rm", "cot_rm"} <= set(summary["stages"])
    for stage in ("classic_rm", "cot_rm"):
        stats = summary["reward_models"][stage]
        assert stats["n"] == 8 and 0.0 <= stats["accuracy"] <= 1.0
        assert {"wrong_precision", "wrong_recall", "unparsed"} <= set(stats)
        assert (run_dir / "tb" / stage).is_dir()  # the stage's curves in TensorBoard
    assert "spot check" in proc.stderr  # the table
    assert (run_dir / "rm_data" / "train.jsonl").is_file()
    spot = read_examples(run_dir / "rm_data" / "spotcheck.jsonl")[:3]  # the exports reload and judge
    assert len(load_classic_rm(run_dir / "classic_rm" / "model").judge(spot)) == 3
    assert len(load_cot_rm(run_dir / "cot_rm" / "model", max_new_tokens=8).judge(spot)) == 3
    results = json.loads((experiment / "results.json").read_text())
    assert set(results) == {"checker", "classic_rm", "cot_rm"}
    for arm in results:
        assert {"rl", "eval"} <= set(results[arm]["stages"]) and set(results[arm]["eval"]) == {"sft", "rl"}
    assert "comes from classic_rm" in proc.stderr + proc.stdout and "comes from cot_rm" in proc.stderr + proc.stdout
    # every arm's RL starts from the shared SFT model (not the last shared export, an RM)
    assert proc.stderr.replace("\n", "").count(f"from {run_dir / 'sft' / 'model'}") == 3
    # evaluation never uses the RM: the same SFT model scores the same in every arm
    assert results["checker"]["eval"]["sft"] == results["classic_rm"]["eval"]["sft"] == results["cot_rm"]["eval"]["sft"]
    # the report over "seeds" (one directory given twice): every number from the files, the spread zero
    data, text = report([experiment, experiment])
    for rm in ("classic_rm", "cot_rm"):
        assert data["aggregate"][f"{rm}/accuracy"] == {"mean": summary["reward_models"][rm]["accuracy"], "std": 0.0, "n": 2}
    assert data["aggregate"]["cot_rm/rl_pass@1"]["mean"] == results["cot_rm"]["eval"]["rl"]["pass@1"]
    assert "| cot_rm |" in text and "Welch" in text


def test_init_from_a_later_stage_is_a_config_error(tmp_path):
    proc = run("reward_model.init_from=rl", f"run.dir={tmp_path / 'run'}")
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert lines == ["error: classic_rm: reward_model.init_from 'rl' is neither a model stage that runs before it "
                     "nor a directory"]
    assert not (tmp_path / "run").exists()
