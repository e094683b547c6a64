"""The reward-model stages as pipeline stages: rm_data, classic_rm, cot_rm (paper §2.3.5).

Each takes (cfg, run_dir, exports, summary) and returns the directory it wrote:
    rm_data     RUN/rm_data/{train,spotcheck}.jsonl from `reward_model.policy`'s rollouts and rewrites
    classic_rm  RUN/classic_rm/model, trained from `reward_model.init_from` on RUN/rm_data
    cot_rm      RUN/cot_rm/model, likewise
Training runs in the pipeline's Lightning trainer (TensorBoard under RUN/tb, step checkpoints, resume
from RUN/<stage>/checkpoints/last.ckpt). After each RM, its agreement with the checker on
RUN/rm_data/spotcheck.jsonl goes to summary.json under "reward_models" and is printed as a table.
`judge_for_rl` loads the RM that `rewards.rm` names for the rl stage (a stage of this run or a directory).
"""

from __future__ import annotations

from pathlib import Path

from rich.table import Table
from transformers import AutoTokenizer

from k15.chat import RAW, ChatFormat, chat_format
from k15.config import ExperimentConfig
from k15.reward_models.classic import load_classic_rm
from k15.reward_models.cot import load_cot_rm
from k15.reward_models.data import read_examples
from k15.reward_models.judge import RewardJudge, check_domains, load_judge, probe
from k15.reward_models.spotcheck import agreement
from k15.reward_models.stages import run_classic_rm, run_cot_rm, run_rm_data
from k15.runs import Summary
from k15.trainer import make_trainer, stage_logger


def _source(name: str | None, exports: dict[str, Path]) -> Path | None:
    # a stage of this run (its export) or a checkpoint directory, as validate() allows
    return None if name is None else exports.get(name, Path(name))


def _chat(cfg: ExperimentConfig, source: Path | None) -> ChatFormat:
    # the tiny world is raw text; a chat template needs the starting checkpoint's tokenizer
    if cfg.data.chat_template == "none" or source is None:
        return RAW
    return chat_format(cfg.data.chat_template, cfg.data.system_prompt, AutoTokenizer.from_pretrained(str(source)))


def rm_data(cfg: ExperimentConfig, run_dir: Path, exports: dict[str, Path], summary: Summary) -> Path:
    policy = _source(cfg.reward_model.policy, exports)
    return run_rm_data(cfg.reward_model, run_dir / "rm_data", cfg.run.seed, cfg.world.heldout_fraction, policy,
                       cfg.model, _chat(cfg, policy))


def classic_rm(cfg: ExperimentConfig, run_dir: Path, exports: dict[str, Path], summary: Summary) -> Path:
    return _train_rm(cfg, run_dir, exports, summary, "classic_rm")


def cot_rm(cfg: ExperimentConfig, run_dir: Path, exports: dict[str, Path], summary: Summary) -> Path:
    return _train_rm(cfg, run_dir, exports, summary, "cot_rm")


def _train_rm(cfg: ExperimentConfig, run_dir: Path, exports: dict[str, Path], summary: Summary, stage: str) -> Path:
    from k15.pipeline import console  # the pipeline imports this module

    rm = cfg.reward_model
    init = _source(rm.init_from, exports)
    stage_dir, data_dir = run_dir / stage, exports.get("rm_data", run_dir / "rm_data")  # shared by arms: elsewhere
    ckpt = stage_dir / "checkpoints" / "last.ckpt"  # present only when an interrupted run is resumed
    ckpt = ckpt if ckpt.exists() else None
    logger = stage_logger(run_dir, stage)
    trainer_fn = lambda d, max_steps, clip: make_trainer(cfg, d, logger, max_steps, clip)
    chat = _chat(cfg, init)
    if stage == "classic_rm":
        model_dir = run_classic_rm(rm, data_dir, init, stage_dir, cfg.run.seed, trainer_fn, cfg.model, ckpt_path=ckpt)
        judge = load_classic_rm(model_dir, batch_size=rm.judge_batch_size).judge
    else:
        model_dir = run_cot_rm(rm, data_dir, init, stage_dir, cfg.run.seed, trainer_fn, cfg.model, chat, ckpt_path=ckpt)
        cot = load_cot_rm(model_dir, max_new_tokens=rm.judge_max_new_tokens, batch_size=rm.judge_batch_size, chat=chat)
        judge = lambda examples: [j.correct for j in cot.judge(examples)]
    spot = read_examples(data_dir / "spotcheck.jsonl")
    stats = agreement([ex.label for ex in spot], judge(spot))
    for key in ("accuracy", "wrong_precision", "wrong_recall"):
        logger.experiment.add_scalar(f"spotcheck/{key}", stats[key], 0)
    logger.finalize("success")
    summary.data.setdefault("reward_models", {})[stage] = stats
    summary.save()
    console.print(spotcheck_table(summary.data["reward_models"]))
    return model_dir


def spotcheck_table(results: dict[str, dict]) -> Table:
    table = Table(title="RM spot check vs the checker, held-out (paper: Classic 84.4%, CoT 98.5%)")
    for column in ("model", "examples", "accuracy", "wrong precision", "wrong recall", "unparsed"):
        table.add_column(column, justify="left" if column == "model" else "right")
    for name, s in results.items():
        table.add_row(name, str(s["n"]), f"{s['accuracy']:.1%}", f"{s['wrong_precision']:.1%}",
                      f"{s['wrong_recall']:.1%}", str(s["unparsed"]))
    return table


def judge_for_rl(cfg: ExperimentConfig, exports: dict[str, Path], records) -> RewardJudge | None:
    """The reward model `rewards.rm` names (a stage of this run, else a directory), loaded and checked
    against the RL prompts `records` (some of its domains; with rewards.rm.probe, verdicts that parse);
    None when rewards.rm.kind is none."""
    from k15.pipeline import console  # the pipeline imports this module

    rm = cfg.rewards.rm
    if rm.kind == "none":
        return None
    path = _source(rm.path, exports)
    judge = load_judge(rm, path, "rewards.rm.path")
    judged = len(check_domains(judge, records))
    said = probe(judge, records) if rm.probe else []
    checked = f"; probe: {sum(j.correct is True for j in said)} of {len(said)} references judged correct" if said else ""
    console.print(f"rl: the reward of {judged} {'/'.join(sorted(judge.domains))} prompts comes from {rm.kind} {path}{checked}")
    return judge


RM_STAGES = {"rm_data": rm_data, "classic_rm": classic_rm, "cot_rm": cot_rm}
