"""Run an experiment: `python -m experiments.run NAME [key=value ...]`.

    python -m experiments.run --list                  every experiment, one line each
    python -m experiments.run NAME --print-config     the fully resolved config (YAML)
    python -m experiments.run NAME a.b=c x.y=z        run it with overrides (applied last)
    python -m experiments.run --resume RUN_DIR        continue an interrupted run where it stopped

An experiment is a module experiments/NAME.py whose `config()` returns an ExperimentConfig, or a
dict {arm name: ExperimentConfig} for an ablation; its optional `REQUIRED` dict names the keys a user
must set ({key: what to pass}, or {key: (what to pass, stages that read it)}, e.g. a checkpoint directory). Bad input ends with one line naming the
problem and exit status 2; `--debug` shows the traceback.

Exit status: 0 done; 2 bad input; 143 (SIGTERM) or 138 (SIGUSR1, SLURM's warning before a kill):
preempted, i.e. stopped at the next safe point with a checkpoint and a line `preempted: ...` naming
the stage, the step or iteration, the checkpoint and the `--resume RUN_DIR` command that continues
the run bit for bit (k15.callbacks.preemption); anything else: a crash.
"""

from __future__ import annotations

import argparse
import difflib
import importlib
import sys
from pathlib import Path

from k15.callbacks.preemption import Preempted
from k15.config import ExperimentConfig, apply_overrides, to_yaml
from k15.errors import ConfigError, K15Error

EXPERIMENTS_DIR = Path(__file__).resolve().parent
NOT_EXPERIMENTS = {"run", "__init__"}


def experiment_names() -> list[str]:
    return sorted(p.stem for p in EXPERIMENTS_DIR.glob("*.py") if p.stem not in NOT_EXPERIMENTS and not p.stem.startswith("_"))


def load_experiment(name: str):
    names = experiment_names()
    if name not in names:
        close = difflib.get_close_matches(name, names, n=3)
        hint = f"; did you mean: {', '.join(close)}" if close else "; see --list"
        raise ConfigError(f"unknown experiment '{name}'{hint}")
    return importlib.import_module(f"experiments.{name}")


def describe(module) -> str:
    return (module.__doc__ or "").strip().splitlines()[0] if module.__doc__ else ""


def resolve(name: str, overrides: list[str]) -> dict[str, ExperimentConfig]:
    """{arm: config} with overrides applied and validated; a single-config experiment has one arm ''."""
    module = load_experiment(name)
    built = module.config()
    arms = built if isinstance(built, dict) else {"": built}
    resolved = {}
    for arm, cfg in arms.items():
        if not isinstance(cfg, ExperimentConfig):
            raise ConfigError(f"experiments/{name}.py: config() must return ExperimentConfig or a dict of them")
        cfg.run.name = f"{name}/{arm}" if arm else name
        resolved[arm] = apply_overrides(cfg, overrides, before_validate=lambda c: check_required(name, module, c))
    return resolved


def check_required(name: str, module, cfg: ExperimentConfig) -> None:
    """The keys experiments/NAME.py lists in REQUIRED must be set (by the experiment or on the command
    line), those tied to stages only when one of their stages runs."""
    from omegaconf import OmegaConf

    node = OmegaConf.structured(cfg)
    missing = []
    for key, need in getattr(module, "REQUIRED", {}).items():
        what, stages = need if isinstance(need, tuple) else (need, ())
        if OmegaConf.select(node, key) is None and (not stages or set(stages) & set(cfg.stages)):
            missing.append(f"{key}={what}")
    if missing:
        raise ConfigError(f"experiment '{name}' needs {' and '.join(missing)}")


def resume(run_dir: Path) -> int:
    """Continue the run in `run_dir` with the config it was started with."""
    import copy

    from k15.config import load_yaml
    from k15.pipeline import run_pipeline
    from k15.preflight import preflight
    from k15.quiet import quiet_libraries
    from k15.runs import Summary

    if not (run_dir / "config.yaml").is_file():
        raise ConfigError(f"{run_dir} is not a run directory (no config.yaml)")
    quiet_libraries()
    cfg = load_yaml(run_dir / "config.yaml")
    remaining = copy.deepcopy(cfg)  # the inputs of finished stages are not needed again
    remaining.stages = [s for s in cfg.stages if s not in Summary.load(run_dir).data["stages"]]
    preflight(remaining)
    run_pipeline(cfg, run_dir, resume=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m experiments.run", description=__doc__.splitlines()[0])
    parser.add_argument("name", nargs="?", help="experiment name (see --list)")
    parser.add_argument("overrides", nargs="*", help="key=value config overrides")
    parser.add_argument("--list", action="store_true", help="list experiments and exit")
    parser.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    parser.add_argument("--debug", action="store_true", help="show tracebacks of user errors")
    parser.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted run from its last checkpoint")
    args = parser.parse_intermixed_args(argv)
    try:
        if args.list:
            for name in experiment_names():
                print(f"{name:24s} {describe(load_experiment(name))}")
            return 0
        if args.resume:
            return resume(Path(args.resume))
        if not args.name:
            parser.error("an experiment name is required (or --list)")
        arms = resolve(args.name, args.overrides)
        if args.print_config:
            for arm, cfg in arms.items():
                if arm:
                    print(f"# ---- arm: {arm}")
                print(to_yaml(cfg), end="")
            return 0
        from k15.arms import run_arms  # heavy imports only when something runs
        from k15.pipeline import run_pipeline
        from k15.preflight import preflight
        from k15.quiet import quiet_libraries
        from k15.runs import create_run_dir, new_run_dir

        quiet_libraries()
        for cfg in arms.values():  # every file the run will read, before anything is written
            preflight(cfg)
        if list(arms) == [""]:
            run_pipeline(arms[""], create_run_dir(arms[""]))
        else:
            first = next(iter(arms.values()))
            run_arms(arms, new_run_dir(first.run, args.name))
        return 0
    except Preempted as stop:  # the line is printed; the status tells a scheduler the run is not done
        return stop.code
    except K15Error as exc:
        if args.debug:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
