"""A Lightning Trainer for one stage, configured from `TrainerConfig`."""

from __future__ import annotations

from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint, TQDMProgressBar
from lightning.pytorch.loggers import TensorBoardLogger

from k15.checkpoint_io import AtomicCheckpointIO
from k15.config import ExperimentConfig


def stage_logger(run_dir: Path, stage: str) -> TensorBoardLogger:
    """One TensorBoard run per stage under RUN/tb/, so `tensorboard --logdir RUN/tb` shows them side by side."""
    return TensorBoardLogger(save_dir=str(run_dir), name="tb", version=stage, default_hp_metric=False)


def make_trainer(
    cfg: ExperimentConfig,
    stage_dir: Path,
    logger: TensorBoardLogger,
    max_steps: int,
    gradient_clip: float = 0.0,
    callbacks: list | None = None,
    step_checkpoints: bool = True,
    log_every_n_steps: int | None = None,
) -> L.Trainer:
    """`step_checkpoints`: Lightning's ModelCheckpoint every N optimizer steps; stages that count
    iterations instead (RL) pass their own checkpoint callback and False."""
    t = cfg.trainer
    extra = []
    if step_checkpoints:
        extra.append(ModelCheckpoint(
            dirpath=str(stage_dir / "checkpoints"),
            filename="step{step}",
            auto_insert_metric_name=False,
            every_n_train_steps=t.checkpoint_every_n_steps,
            save_last=True,
            save_top_k=-1,
        ))
    if t.progress:
        extra.append(TQDMProgressBar(refresh_rate=10))
    return L.Trainer(
        accelerator=t.accelerator,
        devices=t.devices,
        num_nodes=t.num_nodes,
        strategy=t.strategy,
        precision=t.precision,
        max_steps=max_steps,
        max_epochs=-1 if max_steps > 0 else 1,
        logger=logger,
        log_every_n_steps=log_every_n_steps or t.log_every_n_steps,
        gradient_clip_val=gradient_clip or None,
        callbacks=extra + list(callbacks or []),
        enable_progress_bar=t.progress,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        default_root_dir=str(stage_dir),
        enable_checkpointing=step_checkpoints,
        plugins=[AtomicCheckpointIO()],
    )
