import pytest

from k15.config import base
from k15.errors import ConfigError
from k15.runs import Summary, create_run_dir


def test_default_run_dirs_never_collide(tmp_path):
    cfg = base()
    cfg.run.root, cfg.run.name = str(tmp_path), "exp"
    first, second = create_run_dir(cfg), create_run_dir(cfg)
    assert first != second and (first / "config.yaml").is_file() and (second / "config.yaml").is_file()


def test_existing_run_dir_is_refused_and_untouched(tmp_path):
    cfg = base()
    cfg.run.dir = str(tmp_path)
    (tmp_path / "summary.json").write_text("earlier run")
    with pytest.raises(ConfigError, match="already exists"):
        create_run_dir(cfg)
    assert (tmp_path / "summary.json").read_text() == "earlier run"
    assert not (tmp_path / "config.yaml").exists()


def test_summary_is_rewritten_whole(tmp_path):
    import json

    s = Summary(tmp_path)
    s.stage("sft", wall_s=1.5)
    s.eval("sft", {"pass@1": 0.5})
    data = json.loads((tmp_path / "summary.json").read_text())
    assert data["stages"]["sft"]["wall_s"] == 1.5 and data["eval"]["sft"]["pass@1"] == 0.5
