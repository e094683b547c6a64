"""The reward-model stages: make the labelled data, train the Classic RM, train the CoT RM.

Each is a function of explicit arguments (the RM settings, directories, a seed) that returns the
directory it wrote, so a pipeline can wire them like its other stages:
    run_rm_data(cfg, out_dir, seed, heldout_fraction, policy_dir)  -> out_dir: train.jsonl, spotcheck.jsonl, summary.json
    run_classic_rm(cfg, data_dir, init_from, stage_dir, seed)      -> stage_dir/model
    run_cot_rm(cfg, data_dir, init_from, stage_dir, seed)          -> stage_dir/model
Training runs in a Lightning Trainer from `trainer_fn(stage_dir, max_steps, grad_clip)`: by default a
plain one on this machine (no logger, no checkpoints); the pipeline passes one built by
k15.trainer.make_trainer, with its logger, checkpoints and preemption handling, and `ckpt_path` to
resume an interrupted stage (k15.reward_models.pipeline_stages).
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import lightning as L

from k15.chat import RAW, ChatFormat
from k15.config import ModelConfig
from k15.models.policy import is_vlm, load_policy
from k15.errors import ConfigError
from k15.reward_models.classic import ClassicRMModule, classic_from_decoder, classic_data, export_classic_rm
from k15.reward_models.config import RewardModelConfig
from k15.reward_models.cot import CoTRMModule, cot_data, export_cot_rm, with_context
from k15.reward_models.data import build_examples, read_examples, rollout_examples, write_examples
from k15.reward_models.verdicts import resolve_format
from k15.synthetic.freeform import sample_freeform

TrainerFn = Callable[[Path, int, float], L.Trainer]
SAMPLES_PER_QUESTION = 2  # rollouts per question: the policy's right and wrong answers to one question


def plain_trainer(stage_dir: Path, max_steps: int, grad_clip: float) -> L.Trainer:
    return L.Trainer(max_steps=max_steps, max_epochs=-1, logger=False, enable_checkpointing=False,
                     enable_progress_bar=False, enable_model_summary=False, gradient_clip_val=grad_clip or None,
                     default_root_dir=str(stage_dir), num_sanity_val_steps=0, devices=1)


def run_rm_data(cfg: RewardModelConfig, out_dir: Path, seed: int, heldout_fraction: float,
                policy_dir: Path | None = None, model_cfg: ModelConfig | None = None, chat: ChatFormat = RAW) -> Path:
    """train.jsonl (train questions) and spotcheck.jsonl (held-out questions), each with the policy's
    rollouts (when `policy_dir` is given) and rewrites; summary.json counts them by source, label and form."""
    d = cfg.data
    out_dir = Path(out_dir)
    levels = range(d.min_level, d.max_level + 1)
    policy = load_policy(model_cfg or ModelConfig(), policy_dir) if policy_dir is not None else None
    if policy is not None and is_vlm(policy[0]):
        raise ConfigError(f"reward_model.policy={policy_dir} is a vision-language model; RM data is text")
    summary = {}
    sets = (("train", "train", d.train_examples, 0), ("spotcheck", "heldout", d.spotcheck_examples, 100))
    for name, split, n, offset in sets:
        rollouts = []
        if policy is not None and d.rollout_share > 0:
            questions = sample_freeform(round(n * d.rollout_share), split, levels, heldout_fraction, seed + offset + 7,
                                        d.unit_share)
            rollouts = rollout_examples(*policy, questions, SAMPLES_PER_QUESTION, d.rollout_temperature,
                                        d.rollout_max_new_tokens, seed + offset, chat)
        examples = build_examples(n, split, d, heldout_fraction, seed + offset, rollouts)
        write_examples(out_dir / f"{name}.jsonl", examples)
        summary[name] = {
            "examples": len(examples),
            "correct": sum(ex.label for ex in examples),
            "by_source": dict(Counter(ex.source for ex in examples)),
            "rollouts_sampled": len(rollouts),
            "rollouts_correct": sum(ex.label for ex in rollouts),
            "by_kind": dict(sorted(Counter("correct" if ex.label else ex.form.split(":")[0] for ex in examples).items())),
        }
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return out_dir


def run_classic_rm(cfg: RewardModelConfig, data_dir: Path, init_from: Path | None, stage_dir: Path, seed: int,
                   trainer_fn: TrainerFn = plain_trainer, model_cfg: ModelConfig | None = None,
                   ckpt_path: Path | None = None) -> Path:
    """The Classic RM: the scalar-head twin of `init_from`'s decoder trained on data_dir/train.jsonl."""
    L.seed_everything(seed, verbose=False)
    lm, tok = load_policy(model_cfg or ModelConfig(), init_from)
    model = classic_from_decoder(lm, tok, cfg.max_len)
    del lm
    t = cfg.classic
    data, dropped = classic_data(tok, read_examples(Path(data_dir) / "train.jsonl"), t.batch_size, seed, cfg.max_len)
    _say_dropped("classic_rm", dropped, cfg.max_len)
    model.train()
    module = ClassicRMModule(model, t.optim, t.max_steps)
    trainer_fn(Path(stage_dir), t.max_steps, t.optim.grad_clip).fit(module, datamodule=data, ckpt_path=ckpt_path)
    return export_classic_rm(model, tok, Path(stage_dir) / "model")


def run_cot_rm(cfg: RewardModelConfig, data_dir: Path, init_from: Path | None, stage_dir: Path, seed: int,
               trainer_fn: TrainerFn = plain_trainer, model_cfg: ModelConfig | None = None, chat: ChatFormat = RAW,
               ckpt_path: Path | None = None) -> Path:
    """The CoT RM: `init_from`'s decoder fine-tuned to write rationale + verdict for data_dir/train.jsonl."""
    L.seed_everything(seed, verbose=False)
    model, tok = load_policy(model_cfg or ModelConfig(), init_from)
    model = with_context(model, cfg.max_len)
    fmt = resolve_format(cfg.verdict_format, tok)
    t = cfg.cot
    data, dropped = cot_data(tok, read_examples(Path(data_dir) / "train.jsonl"), fmt, t.batch_size, seed,
                                 cfg.max_len, chat)
    _say_dropped("cot_rm", dropped, cfg.max_len)
    model.train()
    module = CoTRMModule(model, tok, t.optim, t.max_steps, chat=chat)
    trainer_fn(Path(stage_dir), t.max_steps, t.optim.grad_clip).fit(module, datamodule=data, ckpt_path=ckpt_path)
    return export_cot_rm(model, tok, Path(stage_dir) / "model", fmt, chat)


def _say_dropped(stage: str, dropped: int, max_len: int) -> None:
    if dropped:  # said out loud: a silently shrunken data set is a known trap
        print(f"{stage}: dropped {dropped} examples longer than the RM context ({max_len} tokens; "
              "reward_model.max_len)", file=sys.stderr)
