"""The stage progress bar (k15/callbacks/progress.py): the stage's own unit and total, no v_num, and
whole lines (not carriage-return frames) when stdout is not a terminal."""

from __future__ import annotations

import lightning as L
from lightning.pytorch.demos.boring_classes import BoringModel

from k15.callbacks.progress import StageProgressBar
from k15.config import apply_overrides, base
from k15.pipeline import run_pipeline
from k15.runs import create_run_dir
from tests.tiny import SMOKE


def test_each_stage_counts_its_own_unit_and_logs_whole_lines(tmp_path, monkeypatch, capsys, one_thread):
    seen = {}
    original_end = StageProgressBar.on_train_end

    def record(self, trainer, pl_module):  # the bar's state as the stage ends, before it is closed
        bar = self.train_progress_bar
        seen[self.stage] = {"total": bar.total, "n": bar.n, "unit": bar.unit, "postfix": bar.postfix or "",
                            "text": str(bar), "batches_per_pass": trainer.num_training_batches}
        original_end(self, trainer, pl_module)

    monkeypatch.setattr(StageProgressBar, "on_train_end", record)
    # 200 documents make a data pass of a few batches, far fewer than the 30 steps: the bar must not count passes.
    cfg = apply_overrides(base(), SMOKE + [
        "stages=[pretrain,rl]", "pretrain.max_steps=30", "pretrain.num_documents=200", "rl.iterations=3",
        "trainer.progress=true", f"run.dir={tmp_path / 'run'}",
    ])
    run_pipeline(cfg, create_run_dir(cfg))

    pre, rl = seen["pretrain"], seen["rl"]
    assert pre["batches_per_pass"] < 30
    assert (pre["total"], pre["n"], pre["unit"]) == (30, 30, "step")
    assert (rl["total"], rl["n"], rl["unit"]) == (3, 3, "iter")
    assert "loss=" in pre["postfix"] and "reward=" in rl["postfix"] and "len=" in rl["postfix"]
    for state in (pre, rl):
        assert "v_num" not in state["text"] and "train/" not in state["text"]
    assert pre["text"].startswith("pretrain: 100%") and rl["text"].startswith("rl: 100%")

    # pytest's stdout is not a terminal: a start line and an end line per stage (the run is far
    # shorter than log_every_s), no carriage-return frames.
    out = capsys.readouterr().out
    assert "\r" not in out
    for stage, total in (("pretrain", 30), ("rl", 3)):
        bars = [line for line in out.splitlines() if line.startswith(f"{stage}: ") and "|" in line]
        assert len(bars) == 2, bars
        assert f" 0/{total} " in bars[0] and f" {total}/{total} " in bars[1]


def fit(tmp_path, bar: StageProgressBar, max_steps: int, ckpt_path=None) -> L.Trainer:
    """Lightning's BoringModel, 8 batches a pass: no k15 stage needed to check the bar's counting."""
    trainer = L.Trainer(accelerator="cpu", max_steps=max_steps, max_epochs=-1 if max_steps > 0 else 1, limit_train_batches=8,
                        callbacks=[bar], logger=False, enable_model_summary=False, default_root_dir=str(tmp_path / bar.stage))
    trainer.fit(BoringModel(), ckpt_path=ckpt_path)
    return trainer


def test_log_lines_follow_log_every_s_and_a_resumed_stage_starts_where_it_stopped(tmp_path, capsys):
    fit(tmp_path, StageProgressBar("every", log_every_s=0.0), max_steps=5)  # no wait: a line per step
    lines = capsys.readouterr().out.splitlines()
    assert [line.split("|")[2].split()[0] for line in lines if line.startswith("every: ")] == [f"{n}/5" for n in range(6)]

    trainer = fit(tmp_path, StageProgressBar("first", log_every_s=3600.0), max_steps=20)  # 20 steps over passes of 8 batches
    ckpt = tmp_path / "first.ckpt"
    trainer.save_checkpoint(ckpt)
    bar = StageProgressBar("again", log_every_s=3600.0)
    fit(tmp_path, bar, max_steps=30, ckpt_path=ckpt)
    assert (bar.train_progress_bar.initial, bar.train_progress_bar.n, bar.train_progress_bar.total) == (20, 30, 30)
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith(("first: ", "again: "))]
    assert [line.split("|")[2].split()[0] for line in lines] == ["0/20", "20/20", "20/30", "30/30"]

    bar = StageProgressBar("iterations")  # no max_steps: one pass, one unit per batch (RL)
    fit(tmp_path, bar, max_steps=-1)
    assert (bar.train_progress_bar.n, bar.train_progress_bar.total, bar.train_progress_bar.unit) == (8, 8, "iter")
