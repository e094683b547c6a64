"""The three RM stages end to end at toy size: data from a policy's rollouts, then both RMs from one SFT directory."""

import json

from k15.models.decoder import export
from k15.reward_models.classic import load_classic_rm
from k15.reward_models.config import RewardModelConfig, RMDataConfig, RMTrainConfig
from k15.reward_models.cot import load_cot_rm
from k15.reward_models.data import read_examples
from k15.reward_models.stages import run_classic_rm, run_cot_rm, run_rm_data
from k15.reward_models.spotcheck import agreement
from k15.synthetic.arithmetic import is_heldout


def test_stages_write_data_and_reloadable_rms(tiny_lm, tmp_path):
    lm, tok = tiny_lm
    sft = export(lm, tok, tmp_path / "sft")
    cfg = RewardModelConfig(
        data=RMDataConfig(train_examples=40, spotcheck_examples=12, rollout_share=0.25, rollout_max_new_tokens=8,
                          max_level=2),
        classic=RMTrainConfig(max_steps=2, batch_size=8), cot=RMTrainConfig(max_steps=2, batch_size=8),
        max_len=160, judge_max_new_tokens=8,
    )
    data = run_rm_data(cfg, tmp_path / "rm_data", seed=0, heldout_fraction=0.1, policy_dir=sft)
    summary = json.loads((data / "summary.json").read_text())
    assert summary["train"]["examples"] == 40 and summary["train"]["correct"] == 20
    assert summary["train"]["rollouts_sampled"] == 20  # 10 questions x 2 samples
    spot = read_examples(data / "spotcheck.jsonl")
    assert len(spot) == 12 and all(is_heldout(ex.question.split(" ")[0], 0.1) for ex in spot)

    classic = load_classic_rm(run_classic_rm(cfg, data, sft, tmp_path / "classic_rm", seed=0))
    cot = load_cot_rm(run_cot_rm(cfg, data, sft, tmp_path / "cot_rm", seed=0), max_new_tokens=8)
    assert json.loads((tmp_path / "cot_rm" / "model" / "k15_reward_model.json").read_text())["verdict_format"] == "plain"
    labels = [ex.label for ex in spot]
    for verdicts in (classic.judge(spot), [j.correct for j in cot.judge(spot)]):
        stats = agreement(labels, verdicts)
        assert stats["n"] == 12 and 0.0 <= stats["accuracy"] <= 1.0


def test_agreement_counts_unparsed_as_wrong():
    stats = agreement([True, False, False, True], [True, None, True, None])
    assert stats == {"n": 4, "accuracy": 0.5, "wrong_precision": 0.5, "wrong_recall": 0.5, "unparsed": 2}
