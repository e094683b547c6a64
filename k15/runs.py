"""Run directories and the run summary.

Every run gets a directory of its own (default runs/NAME/TIMESTAMP) holding config.yaml, the
TensorBoard logs (tb/), one folder per stage (checkpoints, exported model) and summary.json. A run
never writes into another run's directory: an explicit `run.dir` that already has files is refused.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from k15.config import ExperimentConfig, RunConfig, to_yaml
from k15.distributed import is_rank_zero, launch_rank
from k15.errors import ConfigError


def new_run_dir(run: RunConfig, name: str) -> Path:
    """`run.dir` if set (it must be absent or empty), else <root>/<name>/<timestamp>, created."""
    if run.dir:
        path = Path(run.dir)
        if launch_rank() != 0:  # another process of a multi-process run: rank 0 checks and writes the directory
            path.mkdir(parents=True, exist_ok=True)
            return path
        if path.exists() and (not path.is_dir() or any(path.iterdir())):
            raise ConfigError(f"run directory {path} already exists and is not empty; choose another run.dir")
    else:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        path = Path(run.root) / name / stamp
        suffix = 1
        while path.exists():  # two runs started in the same second
            path = Path(run.root) / name / f"{stamp}-{suffix}"
            suffix += 1
    path.mkdir(parents=True, exist_ok=True)
    return path


def create_run_dir(cfg: ExperimentConfig) -> Path:
    if cfg.trainer.devices * cfg.trainer.num_nodes > 1 and not cfg.run.dir:
        # Each process makes the run directory itself, before any can talk to another: name it for them.
        raise ConfigError("a run on several processes (trainer.devices x trainer.num_nodes > 1) needs run.dir=PATH, "
                          "the one run directory all of them write to")
    path = new_run_dir(cfg.run, cfg.run.name)
    if is_rank_zero():
        write_text_atomic(path / "config.yaml", to_yaml(cfg))
    return path


def write_text_atomic(path: Path, text: str) -> None:
    """Write then rename, so a reader (or a crash) never sees a half-written file."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


class Summary:
    """summary.json: eval.<model> results and stages.<stage>.wall_s, rewritten after every change."""

    def __init__(self, run_dir: Path):
        self.path = run_dir / "summary.json"
        self.data: dict[str, Any] = {"run_dir": str(run_dir), "stages": {}, "eval": {}}

    @classmethod
    def load(cls, run_dir: Path) -> "Summary":
        """The summary of an earlier (interrupted) run in `run_dir`, to continue it."""
        summary = cls(run_dir)
        if summary.path.is_file():
            try:
                summary.data = json.loads(summary.path.read_text())
            except json.JSONDecodeError as exc:
                raise ConfigError(f"{summary.path}: not valid JSON ({exc.msg})") from None
        return summary

    def stage(self, name: str, **values: Any) -> None:
        self.data["stages"].setdefault(name, {}).update(values)
        self.save()

    def eval(self, model: str, result: dict) -> None:
        self.data["eval"][model] = result
        self.save()

    def save(self) -> None:
        if not is_rank_zero():  # every process runs the pipeline; one writes the summary
            return
        write_text_atomic(self.path, json.dumps(self.data, indent=2) + "\n")
