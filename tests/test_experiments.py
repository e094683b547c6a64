"""Every experiment file resolves to a valid config, and runs end to end at a smoke size, so none rots."""

import json

import pytest

from experiments.run import describe, experiment_names, load_experiment, main, resolve
from k15.config import ExperimentConfig
from tests.tiny import SMOKE


@pytest.mark.parametrize("name", experiment_names())
def test_experiment_resolves(name):
    assert describe(load_experiment(name)), f"experiments/{name}.py needs a one-line docstring"
    arms = resolve(name, [])
    assert arms and all(isinstance(cfg, ExperimentConfig) for cfg in arms.values())


@pytest.mark.parametrize("name", experiment_names())
def test_experiment_runs_at_smoke_size(name, tmp_path):
    assert main([name, *SMOKE, f"run.dir={tmp_path}"]) == 0
    arms = resolve(name, [])
    if list(arms) == [""]:
        summary = json.loads((tmp_path / "summary.json").read_text())
        assert set(summary["eval"]) == set(arms[""].eval.models)
    else:
        results = json.loads((tmp_path / "results.json").read_text())
        assert set(results) == set(arms)
