"""tools/findings.py: aggregation of results over seeds, verdicts, the report's tables and plots (fake runs)."""

import json
import math
from pathlib import Path

import pytest

from tools import findings


def tiny_model(path: Path) -> str:
    """A real (tiny, untrained) model directory, where a finding starts from a checkpoint."""
    from k15.config import ModelConfig
    from k15.models.decoder import build_decoder, export
    from k15.tokenizer import build_synthetic_tokenizer

    tok = build_synthetic_tokenizer()
    export(build_decoder(ModelConfig(hidden_size=16, num_layers=1, num_heads=2, num_kv_heads=2, intermediate_size=16), tok),
           tok, path)
    return str(path)


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


def test_welch_t_test_by_hand():
    import mpmath

    # ref 0.80 +- 0.02, arm 0.86 +- 0.03 over 3 seeds: se = sqrt(0.02^2/3 + 0.03^2/3) = 0.020817, t = 0.06 / se
    # = 2.8823, df = (v0+v1)^2 / (v0^2/2 + v1^2/2) = 3.4845; the two-sided p integrates the t density's tails
    diff, t, p = findings.welch((0.80, 0.02, 3), (0.86, 0.03, 3))
    df = 3.4845
    density = lambda x: (mpmath.gamma((df + 1) / 2) / (mpmath.sqrt(df * mpmath.pi) * mpmath.gamma(df / 2))
                         * (1 + x * x / df) ** (-(df + 1) / 2))
    assert diff == pytest.approx(0.06) and t == pytest.approx(2.8823, abs=1e-4)
    assert p == pytest.approx(float(2 * mpmath.quad(density, [t, mpmath.inf])), abs=1e-4)  # 0.0530
    assert findings.compare((0.80, 0.02, 3), (0.86, 0.03, 3), "higher").startswith("not distinguishable")  # p > 0.05
    assert findings.compare((0.80, 0.02, 5), (0.86, 0.03, 5), "higher").startswith("agrees")  # 5 seeds: p = 0.0075


def test_report_fills_the_document_and_plots(out, tmp_path):
    doc = tmp_path / "results.md"
    doc.write_text("# x\n" + findings.BEGIN.format("prioritized") + "\nold\n" + findings.END.format("prioritized") + "\ntail\n")
    figures = tmp_path / "figures"
    assert findings.main(["report", "--out", str(out), "--doc", str(doc), "--figures", str(figures),
                          "--data", str(tmp_path / "data")]) == 0
    text = doc.read_text()
    assert "old" not in text and text.endswith("tail\n")
    assert "| uniform | 3 | 92.0 ± 2.0 |" in text
    assert "`prioritized` auc_pass@1 expected higher: opposite" in text
    assert (figures / "prioritized.png").stat().st_size > 1000
    assert json.loads((out / "prioritized" / "aggregate.json").read_text())["uniform"]["final_pass@1"][2] == 3
    data = json.loads((tmp_path / "data" / "prioritized.json").read_text())  # the committed record of the numbers
    assert data["metrics"]["uniform"]["final_pass@1"] == {"mean": pytest.approx(0.92), "std": pytest.approx(0.02), "seeds": 3}
    assert any(v.startswith("`prioritized` auc_pass@1 expected higher: opposite") for v in data["verdicts"])
    assert data["runs"]["uniform"]["0"].endswith("pool/uniform0")


def test_report_of_chosen_labels_leaves_the_other_tables(out, tmp_path):
    other = out / "curriculum" / "seed0"  # a directory with only a borrowed arm must not rewrite its table
    other.mkdir(parents=True)
    (other / "arms.json").write_text(json.dumps({"uniform": str(out / "pool" / "uniform0")}))
    blocks = "".join(findings.BEGIN.format(e) + "\nold\n" + findings.END.format(e) + "\n" for e in ("prioritized", "curriculum"))
    doc = tmp_path / "results.md"
    doc.write_text(blocks)
    common = ["--out", str(out), "--doc", str(doc), "--figures", str(tmp_path / "figures"), "--data", str(tmp_path / "data")]
    assert findings.main(["report", *common, "--labels", "prioritized"]) == 0
    text = doc.read_text()
    assert "| uniform | 3 | 92.0 ± 2.0 |" in text and text.count("\nold\n") == 1  # curriculum's block untouched
    assert not (tmp_path / "data" / "curriculum.json").exists()
    with pytest.raises(SystemExit, match="--labels: no results under .* for nothing_here"):
        findings.main(["report", *common, "--labels", "nothing_here"])


def test_rescale_schedule():
    from experiments.run import resolve

    cfg = resolve("curriculum", ["rl.iterations=60"])["curriculum"]
    default = resolve("curriculum", [])["curriculum"]
    findings.rescale_schedule(cfg, default.rl.iterations)
    assert cfg.rl.sampling.hard_from_iteration == round(default.rl.sampling.hard_from_iteration * 60 / default.rl.iterations)


def test_a_labelled_results_directory_reports_as_its_experiment(out):
    (out / "prioritized").rename(out / "prioritized_128")
    (out / "prioritized_128" / "meta.json").write_text(json.dumps({"experiment": "prioritized", "overrides": []}))
    text = findings.finding_table(out, "prioritized_128")
    assert "`prioritized` auc_pass@1 expected higher" in text


def test_long2short_methods_are_arms_of_one_run(tmp_path):
    """A long2short run evaluates the long model and every method; each is an arm (RUN#model in arms.json)."""
    levels = lambda p, t: {str(l): {"pass@1": p, "mean_tokens": t, "long_share": 0.5, "samples": 4} for l in range(1, 7)}
    ev = lambda p, t: {"pass@1": p, "mean_tokens": t, "levels": levels(p, t)}
    for seed in range(3):
        run = tmp_path / "pool" / f"l2s{seed}"
        run.mkdir(parents=True)
        scores = {"init": (0.95, 26.0), "merge": (0.90, 24.0), "shortest_rs": (0.93, 24.0), "dpo": (0.93, 23.0),
                  "l2s_rl": (0.94 + 0.001 * seed, 21.0 + seed)}
        (run / "summary.json").write_text(json.dumps({"stages": {}, "eval": {k: ev(*v) for k, v in scores.items()}}))
        (run / "curve.json").write_text(json.dumps({"heldout": [], "guess": None}))
        seed_dir = tmp_path / "long2short" / f"seed{seed}"
        seed_dir.mkdir(parents=True)
        mapping = {"long": f"{run}#init", **{m: f"{run}#{m}" for m in findings.L2S_METHODS}}
        (seed_dir / "arms.json").write_text(json.dumps(mapping))
    table = findings.aggregate(tmp_path, "long2short")
    assert list(table) == ["long", *findings.L2S_METHODS]
    assert table["l2s_rl"]["final_tokens"][:2] == (pytest.approx(22.0), pytest.approx(1.0))
    assert table["long"]["final_pass@1"][0] == pytest.approx(0.95)
    text = findings.finding_table(tmp_path, "long2short")
    assert "`l2s_rl` final_tokens expected lower: agrees" in text
    # points lost per token cut: l2s_rl (0.95 - 0.94..) / (26 - 21..) ~ 0.2 per token; dpo 2 / 3 ~ 0.67
    assert table["dpo"]["cost_per_token_saved"][0] == pytest.approx(0.02 / 3)
    assert "`dpo` cost_per_token_saved expected higher than `l2s_rl`: agrees" in text
    assert "`merge` cost_per_token_saved expected higher than `shortest_rs`: agrees" in text
    assert findings.plot_finding(tmp_path, "long2short", tmp_path / "l2s.png").stat().st_size > 1000
    findings.write_results(tmp_path / "long2short" / "seed0")
    results = json.loads((tmp_path / "long2short" / "seed0" / "results.json").read_text())
    assert set(results) == {"long", *findings.L2S_METHODS} and results["dpo"]["model"] == "dpo"


def test_arm_bases_and_long_model_set_where_runs_start(tmp_path):
    small, long, short = (tiny_model(tmp_path / name) for name in ("small_sft", "long", "short"))
    arms = findings.finding_arms("model_size", 1, None, [], 10, arm_bases={"small": small})
    assert arms["small"].model.init_from == small and arms["small"].stages == ["rl", "eval"]
    assert arms["tiny"].model.init_from is None and arms["tiny"].stages[0] == "pretrain"
    (cfg,) = findings.finding_arms("long2short", 0, short, [], 10, long_model=long).values()
    assert (cfg.model.init_from, cfg.long2short.long_model, cfg.long2short.short_model) == (long, long, short)
    assert cfg.stages == [*findings.L2S_METHODS, "eval"] and cfg.eval.models == ["init", *findings.L2S_METHODS]


def test_hard_is_the_upper_half_of_the_evaluated_levels():
    ev = {"levels": {str(l): {"pass@1": l / 10} for l in range(1, 9)}}  # an 8-level world: hard = L5-8
    assert findings.hard(ev) == pytest.approx((0.5 + 0.6 + 0.7 + 0.8) / 4)


def test_only_is_refused_for_long2short(tmp_path):
    with pytest.raises(SystemExit, match="--only does not apply to long2short"):
        findings.main(["run", "--findings", "long2short", "--only", "dpo", "--out", str(tmp_path), "--seeds", "0"])


def test_only_keeps_the_arms_it_does_not_run(out, monkeypatch):
    """A rerun of some arms under a label adds to its arms.json instead of dropping the others."""
    monkeypatch.setattr(findings, "finding_arms", lambda *a, **k: {"uniform": None, "prioritized": None})
    monkeypatch.setattr(findings, "fingerprint", lambda cfg: "new")
    monkeypatch.setattr(findings, "is_done", lambda run_dir: True)  # nothing to launch
    monkeypatch.setattr(findings, "write_results", lambda seed_dir: None)
    before = json.loads((out / "prioritized" / "seed0" / "arms.json").read_text())
    findings.main(["run", "--findings", "prioritized", "--only", "prioritized", "--out", str(out), "--seeds", "0"])
    after = json.loads((out / "prioritized" / "seed0" / "arms.json").read_text())
    assert after == {"uniform": before["uniform"], "prioritized": str(out / "pool" / "new")}


def test_a_borrowed_arm_that_does_not_exist_is_a_one_line_error(out):
    with pytest.raises(SystemExit, match=r"--borrow uniform=curriculum:uniform: .*curriculum/seed0/arms.json has no arm 'uniform'"):
        findings.main(["run", "--findings", "prioritized", "--borrow", "uniform=curriculum:uniform",
                       "--base", tiny_model(out / "base"), "--out", str(out), "--seeds", "0"])


def test_fingerprints_of_finished_runs_survive_keys_added_later():
    """c7e035450f9c: the findings' base config's fingerprint at commit 3f3a2d4, before eval.prompt_path,
    eval.pass_k, rewards.math.answer_format, trainer.record_data_order existed; at their defaults they must
    not change it, set they must."""
    from experiments._ablation import ablation_base

    cfg = ablation_base()
    assert findings.fingerprint(cfg) == "c7e035450f9c"
    cfg.eval.pass_k = [1, 4]
    assert findings.fingerprint(cfg) != "c7e035450f9c"


def test_a_run_ended_by_the_clock_ends_its_curve_at_the_iterations_it_trained(tmp_path):
    from types import SimpleNamespace

    cfg = SimpleNamespace(rl=SimpleNamespace(iterations=100_000))  # rl.max_seconds ended it long before
    (tmp_path / "rl").mkdir()
    assert findings.iterations_done(cfg, tmp_path) == 100_000  # no record: the configured count
    (tmp_path / "rl" / "drawn.jsonl").write_text("".join(f'{{"iteration": {i}}}\n' for i in range(43)))
    assert findings.iterations_done(cfg, tmp_path) == 43
