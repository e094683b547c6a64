import json

from experiments.run import main, resolve
from k15.arms import shared_stages
from tests.tiny import TINY


def test_rl_loss_arms_share_pretrain_and_sft_only():
    arms = resolve("rl_loss", [])
    assert set(arms) == {"k15", "rest", "reinforce"}
    assert shared_stages(arms) == ["pretrain", "sft"]
    assert {a.rl.loss for a in arms.values()} == {"k15", "rest", "reinforce"}


def test_arms_differing_early_share_nothing():
    arms = resolve("rl_loss", [])
    arms["rest"].sft.max_steps += 1
    assert shared_stages(arms) == ["pretrain"]
    arms["rest"].run.seed += 1
    assert shared_stages(arms) == []


def test_ablation_runs_shared_stages_once(tmp_path):
    overrides = [o for o in TINY if not o.startswith("stages=")] + [
        "stages=[sft,rl,eval]", "eval.models=[sft,rl]", "rl.iterations=2", "rl.prompts_per_iteration=2",
        "rl.samples_per_prompt=2", "rl.max_new_tokens=30", "run.threads=1", f"run.dir={tmp_path}",
    ]
    assert main(["rl_loss", *overrides]) == 0
    assert (tmp_path / "shared" / "sft" / "model").is_dir()
    assert not (tmp_path / "k15" / "sft").exists()  # the arms did not train SFT again
    results = json.loads((tmp_path / "results.json").read_text())
    assert set(results) == {"k15", "rest", "reinforce"}
    for arm, summary in results.items():
        assert (tmp_path / arm / "rl" / "model" / "model.safetensors").is_file()
        assert set(summary["eval"]) == {"sft", "rl"}
    assert results["k15"]["eval"]["sft"] == results["rest"]["eval"]["sft"]  # one SFT model, evaluated alike
    assert (tmp_path / "curves_rl.png").stat().st_size > 1000  # the arms' curves, overlaid
