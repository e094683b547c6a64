"""A CPU smoke run of the real pipeline (pretrain -> SFT -> eval) at a tiny size."""

import json

import lightning as L
import torch

from k15.config import apply_overrides, base
from k15.data.sft import SFTDataModule
from k15.models.decoder import build_decoder, load_model_and_tokenizer
from k15.pipeline import run_pipeline
from k15.runs import create_run_dir
from k15.tokenizer import build_synthetic_tokenizer
from tests.tiny import TINY



def sft_loss(model, batch) -> float:
    with torch.no_grad():
        return model.eval()(**batch).loss.item()


def test_pretrain_then_sft_lowers_the_loss_and_writes_the_run(tmp_path):
    cfg = apply_overrides(base(), TINY + [f"run.dir={tmp_path / 'run'}"])
    cfg.run.name = "smoke"
    run_dir = create_run_dir(cfg)
    summary = run_pipeline(cfg, run_dir)

    data = SFTDataModule(build_synthetic_tokenizer(), cfg.sft, cfg.world, seed=123, max_len=64)
    data.setup()
    batch = next(iter(data.train_dataloader()))
    L.seed_everything(cfg.run.seed, verbose=False)
    initial = build_decoder(cfg.model, build_synthetic_tokenizer())
    trained, _ = load_model_and_tokenizer(cfg.model, run_dir / "sft" / "model")
    before, after = sft_loss(initial, batch), sft_loss(trained, batch)
    assert after < before - 1.0, (before, after)

    on_disk = json.loads((run_dir / "summary.json").read_text())
    assert on_disk == summary
    result = on_disk["eval"]["sft"]
    assert 0.0 <= result["pass@1"] <= 1.0 and result["mean_tokens"] > 0
    assert set(result["levels"]) == {"1", "2", "3"}
    assert set(on_disk["stages"]) == {"pretrain", "sft", "eval"}
    assert all(s["wall_s"] >= 0 and s["peak_rss_mb"] > 0 for s in on_disk["stages"].values())
    for stage in ("pretrain", "sft"):
        assert (run_dir / stage / "model" / "model.safetensors").is_file()
        assert (run_dir / stage / "checkpoints" / "last.ckpt").is_file()
        assert any((run_dir / "tb" / stage).glob("events.out.tfevents.*"))
    assert (run_dir / "config.yaml").is_file()
