"""Every experiment file resolves to a valid config, so none of them rots."""

import pytest

from experiments.run import describe, experiment_names, load_experiment, resolve
from k15.config import ExperimentConfig


@pytest.mark.parametrize("name", experiment_names())
def test_experiment_resolves(name):
    assert describe(load_experiment(name)), f"experiments/{name}.py needs a one-line docstring"
    arms = resolve(name, [])
    assert arms and all(isinstance(cfg, ExperimentConfig) for cfg in arms.values())
