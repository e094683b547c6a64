"""Every experiment file resolves to a valid config, and runs end to end at a smoke size, so none rots."""

import json

import pytest

from experiments.run import describe, experiment_names, load_experiment, main, resolve
from k15.config import ExperimentConfig
from k15.errors import ConfigError
from tests.conftest import PROMPT_SETS
from tests.tiny import SMOKE

# Experiments on a user's own checkpoint and data (REQUIRED keys) run end to end in their own tests
# (tests/test_math_rl.py); here they resolve with a tiny checkpoint and the project's test sets.
OWN_DATA = [n for n in experiment_names() if getattr(load_experiment(n), "REQUIRED", None)]


def required_overrides(tiny_qwen2) -> list[str]:
    return [f"model.init_from={tiny_qwen2}", f"rl.prompt_path={PROMPT_SETS / 'math_tiny.parquet'}",
            f"eval.prompt_path={PROMPT_SETS / 'math_tiny_dataset'}", "trainer=cpu"]


@pytest.mark.parametrize("name", experiment_names())
def test_experiment_resolves(name, request):
    assert describe(load_experiment(name)), f"experiments/{name}.py needs a one-line docstring"
    overrides = required_overrides(request.getfixturevalue("tiny_qwen2")) if name in OWN_DATA else []
    arms = resolve(name, overrides)
    assert arms and all(isinstance(cfg, ExperimentConfig) for cfg in arms.values())


@pytest.mark.parametrize("name", OWN_DATA)
def test_required_keys_are_named_when_missing(name):
    with pytest.raises(ConfigError, match=f"experiment '{name}' needs model.init_from=DIR"):
        resolve(name, [])


@pytest.mark.parametrize("name", [n for n in experiment_names() if n not in OWN_DATA])
def test_experiment_runs_at_smoke_size(name, tmp_path):
    assert main([name, *SMOKE, f"run.dir={tmp_path}"]) == 0
    arms = resolve(name, [])
    if list(arms) == [""]:
        summary = json.loads((tmp_path / "summary.json").read_text())
        assert set(summary["eval"]) == set(arms[""].eval.models)
    else:
        results = json.loads((tmp_path / "results.json").read_text())
        assert set(results) == set(arms)
