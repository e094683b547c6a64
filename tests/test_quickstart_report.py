"""tools/quickstart_report.py: per-seed and aggregated quickstart numbers from run directories (fake runs)."""

import json

import pytest

from tools import quickstart_report


def fake_run(path, seed, sft, rl):
    levels = lambda p: {str(lv): {"pass@1": p, "mean_tokens": 10.0 + lv, "long_share": 0.5, "samples": 4} for lv in (1, 2)}
    path.mkdir(parents=True)
    (path / "config.yaml").write_text(f"world:\n  seed: 99\nrun:\n  name: quickstart\n  seed: {seed}\n")  # run.seed, not the first
    (path / "summary.json").write_text(json.dumps({
        "stages": {"pretrain": {"wall_s": 300.0}, "sft": {"wall_s": 120.0}, "rl": {"wall_s": 180.0 + seed}},
        "eval": {"sft": {"pass@1": sft, "mean_tokens": 17.0, "levels": levels(sft)},
                 "rl": {"pass@1": rl, "mean_tokens": 29.0, "levels": levels(rl)}}}))
    return path


def test_report_aggregates_seeds_and_gains(tmp_path):
    dirs = [fake_run(tmp_path / f"s{s}", s, sft, rl) for s, (sft, rl) in enumerate([(0.88, 0.98), (0.86, 0.97), (0.87, 0.99)])]
    assert quickstart_report.main(["report", *map(str, dirs), "--out", str(tmp_path / "docs")]) == 0
    data = json.loads((tmp_path / "docs" / "quickstart.json").read_text())
    gain = data["aggregate"]["gain_points"]
    assert gain["per_seed"] == [10.0, 11.0, 12.0] and gain["mean"] == pytest.approx(11.0) and gain["std"] == pytest.approx(1.0)
    assert gain["min"] == 10.0
    assert data["aggregate"]["models"]["rl"]["pass@1"]["mean"] == pytest.approx(0.98)
    assert data["aggregate"]["stage_wall_s_total"]["max"] == 602.0
    md = (tmp_path / "docs" / "quickstart.md").read_text()
    assert "| rl | 98.0 ± 1.0% | 98.0 ± 1.0% | **98.0 ± 1.0%** | 29.0 | 50% |" in md
    assert "| 1 | 86.0% | 97.0% | +11.0 | pretrain 300, sft 120, rl 181 | - |" in md
    assert "RL gain over SFT: +11.0 ± 1.0 points (smallest +10.0)." in md
