"""A NaN/inf loss skips its update (counted), and too many in a row stop the run with one line."""

import pytest
import torch

import k15.modules.rl as rl_module
from k15.guards import NonFiniteError, NonFiniteGuard


def test_guard_counts_and_stops():
    guard = NonFiniteGuard(limit=3, where="rl")
    assert guard.ok(torch.tensor(1.0))
    assert not guard.ok(torch.tensor(float("nan")))
    assert not guard.ok(torch.tensor([1.0, float("inf")]))
    assert guard.ok(2.0) and guard.in_a_row == 0 and guard.skipped == 2
    guard.ok(float("nan"))
    guard.ok(float("nan"))
    with pytest.raises(NonFiniteError, match="3 non-finite updates in a row at step 7"):
        guard.ok(float("nan"), step=7)


def test_sft_nan_loss_skips_the_step_and_then_stops(tmp_path, monkeypatch):
    """Loss NaN on every step: the weights never change, and the run stops after the limit."""
    from experiments.run import main
    from tests.tiny import TINY
    import transformers

    real_forward = transformers.LlamaForCausalLM.forward

    def nan_forward(self, *args, **kwargs):
        out = real_forward(self, *args, **kwargs)
        if out.loss is not None:
            out.loss = out.loss * float("nan")
        return out

    monkeypatch.setattr(transformers.LlamaForCausalLM, "forward", nan_forward)
    overrides = [o for o in TINY if not o.startswith("stages=")] + ["stages=[sft]", "run.threads=1", f"run.dir={tmp_path}"]
    assert main(["quickstart", *overrides, "trainer.max_nonfinite_in_a_row=4"]) == 2


def test_rl_nan_loss_leaves_weights_unchanged(monkeypatch, tmp_path):
    from k15.config import apply_overrides, base
    from k15.pipeline import run_pipeline
    from k15.runs import create_run_dir
    from tests.tiny import TINY
    from safetensors.torch import load_file

    real = rl_module.rl_loss
    monkeypatch.setattr(rl_module, "rl_loss", lambda *a, **k: (real(*a, **k)[0] * float("nan"), real(*a, **k)[1]))
    overrides = [o for o in TINY if not o.startswith("stages=")] + [
        "stages=[pretrain,rl]", "rl.iterations=2", "rl.epochs=1", "rl.prompts_per_iteration=2", "rl.samples_per_prompt=2",
        "rl.max_new_tokens=20", "run.threads=1", "trainer.max_nonfinite_in_a_row=5", f"run.dir={tmp_path}",
    ]
    cfg = apply_overrides(base(), overrides)
    cfg.run.name = "nan"
    run_dir = create_run_dir(cfg)
    run_pipeline(cfg, run_dir)  # 2 iterations x 1 step: 2 skips, below the limit
    before, after = load_file(run_dir / "pretrain/model/model.safetensors"), load_file(run_dir / "rl/model/model.safetensors")
    assert all(torch.equal(before[k], after[k]) for k in before)
