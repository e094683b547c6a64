"""tools/findings.py: aggregation of results over seeds, verdicts, the report's tables and plots (fake runs)."""

import json
import math

import pytest

from tools import findings


def fake_run(path, start, final, tokens, seed):
    levels = lambda p, t: {str(l): {"pass@1": p, "mean_tokens": t, "long_share": 0.5, "samples": 4} for l in range(1, 7)}
    ev = lambda p, t: {"pass@1": p, "mean_tokens": t, "levels": levels(p, t)}
    path.mkdir(parents=True)
    (path / "summary.json").write_text(json.dumps({
        "stages": {"rl": {"wall_s": 10.0 + seed}}, "eval": {"init": ev(start, 10.0), "rl": ev(final, tokens)}}))
    curve = [{"iteration": 0, **ev(start, 10.0)}, {"iteration": 10, **ev((start + final) / 2, tokens)},
             {"iteration": 20, **ev(final, tokens)}]
    (path / "curve.json").write_text(json.dumps({"heldout": curve, "guess": None}))


@pytest.fixture
def out(tmp_path):
    # arm a: final 0.90, 0.92, 0.94; arm b: 0.80, 0.81, 0.82 — clearly apart
    for seed in range(3):
        mapping = {}
        for arm, final in (("uniform", 0.90 + 0.02 * seed), ("prioritized", 0.80 + 0.01 * seed)):
            run = tmp_path / "pool" / f"{arm}{seed}"
            fake_run(run, 0.5, final, 20.0 + seed, seed)
            mapping[arm] = str(run)
        seed_dir = tmp_path / "prioritized" / f"seed{seed}"
        seed_dir.mkdir(parents=True)
        (seed_dir / "arms.json").write_text(json.dumps(mapping))
    return tmp_path


def test_mean_std():
    assert findings.mean_std([1.0, 2.0, 3.0]) == (2.0, 1.0, 3)
    assert findings.mean_std([5.0]) == (5.0, 0.0, 1)
    m, s, n = findings.mean_std([])
    assert n == 0 and math.isnan(m)


def test_auc_and_slope():
    assert findings.auc([(0, 0.0), (10, 1.0)]) == pytest.approx(0.5)
    assert findings.slope([1, 2, 3], [2, 4, 6]) == pytest.approx(2.0)


def test_aggregate_over_seeds(out):
    table = findings.aggregate(out, "prioritized")
    assert set(table) == {"uniform", "prioritized"}
    m, s, n = table["uniform"]["final_pass@1"]
    assert (m, n) == (pytest.approx(0.92), 3) and s == pytest.approx(0.02)
    assert table["prioritized"]["final_tokens"][0] == pytest.approx(21.0)
    assert table["uniform"]["auc_pass@1"][0] == pytest.approx((0.5 + 0.92) / 2, abs=1e-9)


def test_verdicts():
    assert findings.compare((0.9, 0.01, 3), (0.8, 0.01, 3), "higher").startswith("opposite")
    assert findings.compare((0.8, 0.01, 3), (0.9, 0.01, 3), "higher").startswith("agrees")
    assert findings.compare((0.8, 0.1, 3), (0.82, 0.1, 3), "higher").startswith("not distinguishable")
    assert findings.compare((0.8, 0.1, 3), (0.82, 0.1, 3), "similar").startswith("agrees")
    assert findings.compare((0.8, 0.0, 1), (0.9, 0.0, 1), "higher").startswith("inconclusive")


def test_report_fills_the_document_and_plots(out, tmp_path):
    doc = tmp_path / "results.md"
    doc.write_text("# x\n" + findings.BEGIN.format("prioritized") + "\nold\n" + findings.END.format("prioritized") + "\ntail\n")
    figures = tmp_path / "figures"
    assert findings.main(["report", "--out", str(out), "--doc", str(doc), "--figures", str(figures)]) == 0
    text = doc.read_text()
    assert "old" not in text and text.endswith("tail\n")
    assert "| uniform | 3 | 92.0 ± 2.0 |" in text
    assert "`prioritized` auc_pass@1 expected higher: opposite" in text
    assert (figures / "prioritized.png").stat().st_size > 1000
    assert json.loads((out / "prioritized" / "aggregate.json").read_text())["uniform"]["final_pass@1"][2] == 3


def test_rescale_schedule():
    from experiments.run import resolve

    cfg = resolve("curriculum", ["rl.iterations=30"])["curriculum"]
    default = resolve("curriculum", [])["curriculum"]
    findings.rescale_schedule(cfg, default.rl.iterations)
    assert cfg.rl.sampling.hard_from_iteration == round(default.rl.sampling.hard_from_iteration * 30 / default.rl.iterations)


def test_a_labelled_results_directory_reports_as_its_experiment(out):
    (out / "prioritized").rename(out / "prioritized_128")
    (out / "prioritized_128" / "meta.json").write_text(json.dumps({"experiment": "prioritized", "overrides": []}))
    text = findings.finding_table(out, "prioritized_128")
    assert "`prioritized` auc_pass@1 expected higher" in text
