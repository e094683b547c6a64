"""benchmarks/gpu_check.py runs on a GPU machine only now and then: its CPU dry run keeps its code paths alive."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import LlamaConfig, LlamaForCausalLM, Qwen2ForCausalLM

ROOT = Path(__file__).resolve().parents[1]


def load_gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "benchmarks/gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_gpu_check_dry_run_exercises_every_phase(tmp_path):
    env = {**os.environ, "OUT": str(tmp_path), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks/gpu_check.py"), "--cpu-dry-run"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    lines = proc.stdout.strip().splitlines()
    assert lines[-1].startswith("gpu_check ratio=")
    summary = json.loads(lines[-2].removeprefix("gpu_check summary "))
    assert summary["ok"] and summary["phases"]["pipeline_fsdp"]["status"] == "skipped"
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    assert report["summary"] == summary
    assert report["train"]["attention"] == "torch_varlen"  # the varlen plumbing ran (on its CPU reference kernel)
    assert report["train"]["loss_gap_vs_sdpa"] < 1e-4
    varlen = report["varlen"]  # packed rows in the varlen form vs the same documents padded, fp32 on CPU
    assert varlen["flash_attention_2"].startswith("skipped:") and varlen["packed_attention"] == "sdpa"
    assert varlen["agree"] and varlen["loss_abs_diff"] < 1e-5 and varlen["logprob_max_abs_diff"] < 1e-5
    assert varlen["packed_tokens_per_s"] > 0 and varlen["padded_tokens_per_s"] > 0
    assert report["rollout"]["greedy_rows_identical_frac"] == 1.0  # fp32 on CPU: exact
    assert report["fsdp"]["loss_fell"] and report["fsdp"]["param_dtypes"] == ["float32"]
    # Lightning's FSDPStrategy refuses CPU: said so, not failed. FSDP2 runs the real pipeline here.
    assert "refuses CPU" in report["pipeline_fsdp"]["skipped"]
    fsdp2 = report["pipeline_fsdp2"]
    assert fsdp2["ok"] and fsdp2["rc"] == 0 and set(fsdp2["stage_wall_s"]) == {"pretrain", "rl", "eval"}
    assert fsdp2["exports"] == {"pretrain": "ok", "rl": "ok"} and 0.0 <= fsdp2["eval_pass@1"]["rl"] <= 1.0
    assert "trainer=fsdp2" in (tmp_path / "pipeline_fsdp2.log").read_text()


def test_each_phase_gets_its_own_model_config():
    """HF's _from_config writes its dtype onto the config: the bf16 rollout phase once turned the
    FSDP phase's fp32 master weights into bf16 through the shared config."""
    gpu_check = load_gpu_check()
    args = type("Args", (), {"cpu_dry_run": True, "vocab": 64, "row_len": 32})()
    cfg = gpu_check.model_config(args)

    def rollout_like(c):  # what rollout_phase does to its config
        Qwen2ForCausalLM._from_config(c, attn_implementation="sdpa", dtype=torch.bfloat16)
        return {"dtype": str(c.dtype)}

    def fsdp_like(c):  # what fsdp_phase builds and checks
        gpu_check.require_fp32(Qwen2ForCausalLM._from_config(c, attn_implementation="sdpa"))
        return {}

    report = {}
    gpu_check.run_phases({"rollout": rollout_like, "fsdp": fsdp_like}, cfg, report)
    assert report["rollout"]["dtype"] == "torch.bfloat16" and "error" not in report["fsdp"], report
    assert getattr(cfg, "dtype", None) in (None, torch.float32)  # the shared config was never touched
    # ...and the check catches what sharing did: bf16 weights are refused
    with pytest.raises(RuntimeError, match="bfloat16"):
        gpu_check.require_fp32(Qwen2ForCausalLM._from_config(cfg, dtype=torch.bfloat16))


def test_export_check_names_weights_an_fsdp_wrapper_would_leave(tmp_path):
    gpu_check = load_gpu_check()
    config = LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=2, tie_word_embeddings=True)
    LlamaForCausalLM(config).save_pretrained(tmp_path)
    assert gpu_check.export_problems(tmp_path) is None
    weights = load_file(tmp_path / "model.safetensors")
    key = "model.layers.0.mlp.up_proj.weight"
    weights["model.layers.0._fsdp_wrapped_module.mlp.up_proj.weight"] = weights.pop(key)
    save_file(weights, tmp_path / "model.safetensors", metadata={"format": "pt"})
    problems = gpu_check.export_problems(tmp_path)
    assert f"missing: {key}" in problems and "unexpected: model.layers.0._fsdp_wrapped_module" in problems
