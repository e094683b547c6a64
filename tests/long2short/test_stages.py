"""The long2short stages run end to end at a tiny size and export models that evaluation reads."""

import json

from k15.config import apply_overrides, base
from k15.pipeline import run_pipeline
from k15.runs import create_run_dir
from tests.tiny import TINY


def test_merge_rs_dpo_stages_smoke(tmp_path, monkeypatch):
    # A barely trained tiny model is rarely right; count every well-formed answer as correct so the
    # stages have data to train on (the verifier is not what this test is about).
    import k15.rewards.registry as registry
    from k15.rewards.rule import Verdict

    monkeypatch.setattr(registry, "verify", lambda text, answer: Verdict(float(text.endswith("</answer>")), "ok", None))
    overrides = [o for o in TINY if not o.startswith("stages=")] + [
        "stages=[pretrain,sft,merge,shortest_rs,dpo,l2s_rl,eval]", "eval.models=[sft,merge,shortest_rs,dpo,l2s_rl]",
        "rl.prompts_per_iteration=2", "rl.samples_per_prompt=2", "long2short.rl_iterations=2", "long2short.rl_max_new_tokens=30",
        "long2short.long_model=sft", "long2short.short_model=pretrain", "long2short.num_prompts=16",
        "long2short.samples_per_prompt=4", "long2short.max_new_tokens=30", "long2short.rs_steps=3",
        "long2short.rs_batch_size=4", "long2short.dpo_steps=3", "long2short.dpo_batch_size=4", "run.threads=1",
        f"run.dir={tmp_path / 'run'}",
    ]
    cfg = apply_overrides(base(), overrides)
    cfg.run.name = "l2s-smoke"
    run_dir = create_run_dir(cfg)
    summary = run_pipeline(cfg, run_dir)
    assert set(summary["eval"]) == {"sft", "merge", "shortest_rs", "dpo", "l2s_rl"}
    assert (run_dir / "accuracy_vs_tokens.png").stat().st_size > 1000
    for stage in ("merge", "shortest_rs", "dpo", "l2s_rl"):
        assert (run_dir / stage / "model" / "model.safetensors").is_file()
    rows = [json.loads(line) for line in (run_dir / "shortest_rs" / "shortest_correct.jsonl").read_text().splitlines()]
    assert rows and all(r["response"].endswith("</answer>") for r in rows)
    assert (run_dir / "dpo" / "pairs.jsonl").is_file()
