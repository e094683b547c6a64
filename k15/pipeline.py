"""The staged pipeline: pretrain -> SFT -> RL -> eval, each stage starting from the previous one's export.

Every training stage exports its model in Hugging Face format to RUN/<stage>/model; that directory
is the next stage's starting point and what evaluation loads. `model.init_from` starts the chain
from a user's checkpoint instead of a fresh model; `exports` hands in stages already run elsewhere
(the shared stages of an ablation's arms).
"""

from __future__ import annotations

import sys
import time
from dataclasses import asdict
from datetime import timedelta
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import Timer
from rich.console import Console
from rich.table import Table

from k15.config import MODEL_STAGES, VISION_STAGES, ExperimentConfig
from k15.callbacks.checkpoint import IterationCheckpoint
from k15.callbacks.preemption import Preempted, catch_signals, stop_if_requested
from k15.data.pretrain import TextPretrainDataModule
from k15.chat import RAW, ChatFormat, chat_format_of
from k15.data.prompts import FieldMap, PromptDataModule, read_prompt_set, write_prompt_set
from k15.data.sft import SFTDataModule, read_sft_examples
from k15.eval.evaluate import EvalResult, evaluate, evaluate_prompt_set, sample_problems_for_logging
from k15.eval.plots import accuracy_vs_tokens, save_figure
from k15.models.decoder import num_parameters
from k15.models.policy import export_policy, is_vlm, load_policy
from k15.models.vlm import VisionLanguageModel
from k15.long2short.stages import run_dpo, run_l2s_rl, run_merge, run_shortest_rs
from k15.reward_models.pipeline_stages import RM_STAGES, judge_for_rl
from k15.modules.pretrain import PretrainModule
from k15.modules.rl import RLModule
from k15.modules.sft import SFTModule
from k15.errors import DataError
from k15.perf import stage_memory
from k15.preflight import check_prompt_lengths
from k15.runs import Summary
from k15.trainer import make_trainer, stage_logger

# Rich assumes 80 columns when stderr is not a terminal (a log file, CI): too narrow for the tables.
CHAIN_STAGES = ("pretrain", *VISION_STAGES, "sft", "rl")  # each starts from the previous one's export
LONG2SHORT_STAGES = {"merge": run_merge, "shortest_rs": run_shortest_rs, "dpo": run_dpo, "l2s_rl": run_l2s_rl}

console = Console(stderr=True, width=None if sys.stderr.isatty() else 120)


def run_pipeline(
    cfg: ExperimentConfig, run_dir: Path, exports: dict[str, Path] | None = None, resume: bool = False
) -> dict:
    """Run `cfg.stages` in order; returns the summary (also written to RUN/summary.json).

    With `resume`, stages that summary.json records as finished are skipped (their exports are
    reused) and the first unfinished one continues from its last checkpoint, if it wrote one.
    SIGTERM / SIGUSR1 stop the run at the next safe point with a checkpoint (k15.callbacks.preemption):
    `Preempted` (a SystemExit, status 128 + signal) leaves, noted under "preempted" in summary.json.
    """
    with catch_signals():
        try:
            return _run_stages(cfg, run_dir, exports, resume)
        except Preempted as stop:
            summary = Summary.load(run_dir)
            summary.data.setdefault("preempted", []).append(stop.record)
            summary.save()
            raise


def _run_stages(cfg: ExperimentConfig, run_dir: Path, exports: dict[str, Path] | None, resume: bool) -> dict:
    if cfg.run.threads:
        torch.set_num_threads(cfg.run.threads)
    summary = Summary.load(run_dir) if resume else Summary(run_dir)
    exports = dict(exports or {})
    if cfg.model.init_from:
        exports["init"] = Path(cfg.model.init_from)
    trained = [p for name, p in exports.items() if name in CHAIN_STAGES]  # not a reward model's export
    current: Path | None = trained[-1] if trained else None
    for stage in cfg.stages:
        if resume and stage in summary.data["stages"]:
            if stage in MODEL_STAGES:
                exports[stage] = run_dir / stage / "model"
                current = exports[stage] if stage in CHAIN_STAGES else current
            elif stage in RM_STAGES:  # an RM this run trained may be the RL reward (rewards.rm.path)
                exports[stage] = run_dir / stage / ("model" if stage != "rm_data" else "")
            console.print(f"{stage}: finished before, skipped")
            continue
        ckpt = run_dir / stage / "checkpoints" / "last.ckpt"
        ckpt = ckpt if resume and ckpt.exists() else None  # a file, or a folder with sharded checkpoints
        if ckpt:
            console.print(f"{stage}: resuming from {ckpt}")
        started = time.perf_counter()
        console.rule(f"[bold]{cfg.run.name}: {stage}")
        if stage == "pretrain":
            current = train_pretrain(cfg, run_dir, current, ckpt)
            exports[stage] = current
        elif stage in VISION_STAGES:
            from k15.vision_stages import train_vision_stage

            current = train_vision_stage(cfg, run_dir, stage, current, ckpt)
            exports[stage] = current
        elif stage == "sft":
            current = train_sft(cfg, run_dir, current, ckpt_path=ckpt)
            exports[stage] = current
        elif stage == "rl":
            current = train_rl(cfg, run_dir, current, ckpt, exports=exports)
            exports[stage] = current
        elif stage in LONG2SHORT_STAGES:  # these start from long2short.long_model, not the chain
            exports[stage] = LONG2SHORT_STAGES[stage](cfg, run_dir, exports)
        elif stage in RM_STAGES:  # these record their spot-check agreement in the summary
            exports[stage] = RM_STAGES[stage](cfg, run_dir, exports, summary)
        elif stage == "eval":
            run_eval(cfg, run_dir, exports, summary)
        summary.stage(
            stage, wall_s=round(time.perf_counter() - started, 1), **stage_memory(),
            **({"resumed_from": str(ckpt)} if ckpt else {}),
        )
        stop_if_requested(run_dir, stage)  # a signal during an export or evaluation: stop here
    console.print(f"run directory: {run_dir}   (tensorboard --logdir {run_dir / 'tb'})")
    summary.data["exports"] = {name: str(path) for name, path in exports.items()}
    summary.save()
    return summary.data


def _train(cfg: ExperimentConfig, run_dir: Path, stage: str, init_from: Path | None, module_cls, make_data, stage_cfg,
           ckpt_path: Path | None = None, chat: bool = False, sample_prompts: list[str] | None = None) -> Path:
    """A next-token stage (pretraining, SFT); `chat`: prompts in the run's chat format (`data.chat_template`)."""
    L.seed_everything(cfg.run.seed, verbose=False)
    model, tok = load_policy(cfg.model, init_from)  # a text model, or a VLM trained on text (SFT of a VLM)
    model.train()  # from_pretrained returns a model in eval mode
    console.print(f"{stage}: {num_parameters(model) / 1e6:.2f}M parameters, from {init_from or cfg.model.init_from or 'scratch'}")
    stage_dir = run_dir / stage
    fmt = chat_format_of(cfg.data, tok, model) if chat else RAW
    module = module_cls(
        model, tok, stage_cfg.optim, stage_cfg.max_steps,
        sample_prompts=sample_prompts or sample_problems_for_logging(cfg.world),
        sample_every_n_steps=cfg.trainer.sample_every_n_steps,
        max_nonfinite_in_a_row=cfg.trainer.max_nonfinite_in_a_row,
        chat=fmt,
    )
    trainer = make_trainer(cfg, stage_dir, stage_logger(run_dir, stage), stage_cfg.max_steps, stage_cfg.optim.grad_clip)
    trainer.fit(module, datamodule=make_data(tok, fmt), ckpt_path=ckpt_path)
    return export_policy(model, tok, stage_dir / "model")


def train_pretrain(cfg: ExperimentConfig, run_dir: Path, init_from: Path | None, ckpt_path: Path | None = None) -> Path:
    data = lambda tok, fmt: TextPretrainDataModule(tok, cfg.pretrain, cfg.world, cfg.run.seed)
    return _train(cfg, run_dir, "pretrain", init_from, PretrainModule, data, cfg.pretrain, ckpt_path)


def train_sft(cfg: ExperimentConfig, run_dir: Path, init_from: Path | None, stage: str = "sft", ckpt_path: Path | None = None) -> Path:
    data = lambda tok, fmt: SFTDataModule(tok, cfg.sft, cfg.world, cfg.run.seed, cfg.model.max_seq_len, cfg.data, fmt)
    shown = None
    if cfg.sft.data_path:  # watch generations on the user's own prompts
        shown = [p for p, _ in read_sft_examples(cfg.sft.data_path, cfg.data.prompt_field, cfg.data.response_field)[:6]]
    return _train(cfg, run_dir, stage, init_from, SFTModule, data, cfg.sft, ckpt_path, chat=True, sample_prompts=shown)


def train_rl(
    cfg: ExperimentConfig, run_dir: Path, init_from: Path | None, ckpt_path: Path | None = None, stage: str = "rl",
    exports: dict[str, Path] | None = None,
) -> Path:
    L.seed_everything(cfg.run.seed, verbose=False)
    model, tok = load_policy(cfg.model, init_from)
    model.train()
    r = cfg.rl
    stage_dir = run_dir / stage
    prompt_path = r.prompt_path
    if prompt_path is None and is_vlm(model):  # the synthetic image tasks
        from k15.data.vision_prompts import write_vision_prompt_set

        from k15.write_once import write_once

        out = stage_dir / "vision_prompts"
        settings = {"tasks": cfg.vlm.tasks, "n": r.num_prompts, "seed": cfg.run.seed, "world": asdict(cfg.world)}
        write_once(out, settings, lambda tmp: write_vision_prompt_set(tmp, cfg.vlm.tasks, r.num_prompts, cfg.run.seed + 2, cfg.world))
        prompt_path = out / "prompts.jsonl"
    data = PromptDataModule(cfg.world, prompt_path, r.num_prompts, r.iterations, cfg.run.seed, FieldMap.from_config(cfg.data))
    data.setup()
    chat = run_chat_format(cfg, tok, model)
    console.print(
        f"{stage}: {len(data.records)} prompts, {r.iterations} iterations x {r.prompts_per_iteration} prompts x "
        f"{r.samples_per_prompt} samples, loss {r.loss}, from {init_from or cfg.model.init_from or 'scratch'}"
    )
    check_prompt_lengths(data.records, tok, r.max_new_tokens, cfg.model.max_seq_len, prompt_path or "synthetic prompt set",
                         model, chat)
    write_prompt_set(data.records, stage_dir / "prompts.jsonl")  # what this run trained on, for the record
    judge = judge_for_rl(cfg, exports or {}, data.records) if stage == "rl" else None  # rewards.rm
    module = RLModule(
        model, tok, data.records, r, cfg.model.max_seq_len, cfg.run.seed, cfg.trainer.max_nonfinite_in_a_row, cfg.rewards,
        chat, judge,
    )
    checkpoints = IterationCheckpoint(stage_dir / "checkpoints", r.checkpoint_every_n_iterations)
    # rl.max_seconds: Lightning's Timer ends training at the first iteration end past it (its clock is saved in
    # the checkpoint, so a resumed run has only the rest); the end checkpoint and the export follow as usual
    limit = [Timer(duration=timedelta(seconds=r.max_seconds), interval="step")] if r.max_seconds else []
    trainer = make_trainer(
        cfg, stage_dir, stage_logger(run_dir, stage), max_steps=-1, callbacks=[checkpoints, *limit],
        step_checkpoints=False, log_every_n_steps=1,
    )
    trainer.fit(module, datamodule=data, ckpt_path=ckpt_path)
    return export_policy(model, tok, stage_dir / "model")


def run_chat_format(cfg: ExperimentConfig, tok, model) -> ChatFormat:
    """How RL and evaluation prompt `model`: k15's own VLM raw (as it was trained), others in `data.chat_template`."""
    return RAW if isinstance(model, VisionLanguageModel) else chat_format_of(cfg.data, tok, model)


def run_eval(cfg: ExperimentConfig, run_dir: Path, exports: dict[str, Path], summary: Summary) -> dict[str, EvalResult]:
    results, other_tasks = {}, {}
    logger = stage_logger(run_dir, "eval")
    writer = logger.experiment
    e = cfg.eval
    records = read_prompt_set(e.prompt_path, FieldMap.from_config(cfg.data), "eval.prompt_path") if e.prompt_path else None
    if records is None and cfg.rl.prompt_path and {"rl", "l2s_rl"} & set(cfg.stages):
        console.print(f"[bold red]WARNING[/]: RL trained on {cfg.rl.prompt_path}, but evaluation scores the synthetic "
                      "world's held-out problems; set eval.prompt_path to a held-out set of your own")
    for name in e.models:
        model, tok = load_policy(cfg.model, exports[name])
        if is_vlm(model) and records is None:  # the image tasks; "problem" (if evaluated) is the headline
            from k15.eval.vision import evaluate_vision

            chat = run_chat_format(cfg, tok, model)
            by_task = evaluate_vision(model, tok, cfg.world, e, cfg.vlm.tasks, seed=cfg.run.seed, chat=chat)
            main = "problem" if "problem" in by_task else next(iter(by_task))
            result = by_task[main]
            summary.eval(name, {**result.to_dict(), "task": main, "tasks": {t: r.to_dict() for t, r in by_task.items()}})
            for task, r in by_task.items():
                if task != main:
                    other_tasks[f"{name} {task}"] = r
                    log_eval(writer, f"{name}/{task}", r)
        elif records is not None:
            chat = run_chat_format(cfg, tok, model)
            result = evaluate_prompt_set(model, tok, records, e, cfg.run.seed, chat, cfg.rewards)
            summary.eval(name, {**result.to_dict(), "prompt_path": e.prompt_path})
        else:
            result = evaluate(model, tok, cfg.world, e, seed=cfg.run.seed)
            summary.eval(name, result.to_dict())
        results[name] = result
        log_eval(writer, name, result)
    if len(results) > 1:  # where the models sit on the accuracy-vs-length plane
        fig = accuracy_vs_tokens({name: r.to_dict() for name, r in results.items()})
        png = save_figure(fig, run_dir / "accuracy_vs_tokens.png")
        logger.experiment.add_figure("eval/accuracy_vs_tokens", fig, 0)
        console.print(f"plot: {png}")
    logger.finalize("success")
    console.print(results_table(results, e.temperature))
    if other_tasks:
        console.print(results_table(other_tasks, e.temperature))
    return results


def log_eval(writer, name: str, result: EvalResult) -> None:
    writer.add_scalar(f"eval/{name}/pass@1", result.pass_at_1, 0)
    for k in sorted(next(iter(result.levels.values())).pass_at_k):
        writer.add_scalar(f"eval/{name}/pass@{k}", result.pass_at_k(k), 0)
    writer.add_scalar(f"eval/{name}/mean_tokens", result.mean_tokens, 0)
    for group, r in result.levels.items():
        key = f"level{group}" if result.group_by == "level" else f"{result.group_by}_{group}"
        writer.add_scalar(f"eval/{name}/pass@1_{key}", r.pass_at_1, 0)
    writer.add_text(f"eval/{name}/examples", "\n".join(f"    {e}" for e in result.examples), 0)


def results_table(results: dict[str, EvalResult], temperature: float) -> Table:
    first = next(iter(results.values()))
    groups = sorted({g for r in results.values() for g in r.levels}, key=lambda g: (isinstance(g, str), g))
    groups = [] if first.group_by == "all" else groups  # one group: the overall column says it all
    ks = sorted(next(iter(first.levels.values())).pass_at_k)
    table = Table(title=f"held-out pass@1 (T={temperature:g}) and mean tokens per answer")
    table.add_column("model")
    for group in groups:
        table.add_column(f"L{group}" if first.group_by == "level" else str(group), justify="right")
    table.add_column("mean" if first.macro else "all", justify="right")
    for k in ks:
        table.add_column(f"pass@{k}", justify="right")
    table.add_column("tokens", justify="right")
    table.add_column("long CoT", justify="right")  # share of answers that think first
    for name, r in results.items():
        long_share = sum(x.long_share * x.samples for x in r.levels.values()) / sum(x.samples for x in r.levels.values())
        table.add_row(
            name, *(f"{r.levels[g].pass_at_1:.1%}" if g in r.levels else "-" for g in groups),
            f"{r.pass_at_1:.1%}", *(f"{r.pass_at_k(k):.1%}" for k in ks), f"{r.mean_tokens:.1f}", f"{long_share:.0%}",
        )
    return table
