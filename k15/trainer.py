"""A Lightning Trainer for one stage, configured from `TrainerConfig`.

A YAML preset names a strategy (`trainer.strategy`); the strategy object is built here, because
FSDP's wrap policy is a set of classes and ModelParallelStrategy needs the mesh sizes.
"""

from __future__ import annotations

from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.strategies import DDPStrategy, FSDPStrategy, ModelParallelStrategy, Strategy
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.core.optimizer import _MockOptimizer
from lightning.pytorch.loggers import TensorBoardLogger

from k15.callbacks.checkpoint import PreemptionCheckpoint, ResumeReport
from k15.callbacks.data_order import DrawnPrompts, ExampleOrder
from k15.callbacks.progress import StageProgressBar
from k15.checkpoint_io import AtomicCheckpointIO
from k15.config import ExperimentConfig, TrainerConfig
from k15.distributed import block_classes, shard_unit_classes
from k15.errors import ConfigError


def stage_logger(run_dir: Path, stage: str) -> TensorBoardLogger:
    """One TensorBoard run per stage under RUN/tb/, so `tensorboard --logdir RUN/tb` shows them side by side."""
    return TensorBoardLogger(save_dir=str(run_dir), name="tb", version=stage, default_hp_metric=False)


class FSDP2Strategy(ModelParallelStrategy):
    """ModelParallelStrategy (FSDP2 along one data-parallel mesh axis) that also carries whether the
    modules' `configure_model` should checkpoint activations (k15.distributed.fully_shard_model)."""

    def __init__(self, activation_checkpointing: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.activation_checkpointing = activation_checkpointing

    def optimizer_state(self, optimizer) -> dict:
        # RL owns its optimizer (k15.modules.rl) and hands Lightning none; Lightning's stand-in has
        # no parameters of the model, which torch's sharded optimizer state dict cannot handle.
        if _is_mock(optimizer):
            return {}
        return super().optimizer_state(optimizer)

    def load_checkpoint(self, checkpoint_path, weights_only=None):
        real, self.optimizers = self.optimizers, [o for o in self.optimizers if not _is_mock(o)]
        try:  # (the same stand-in: nothing to restore into it)
            return super().load_checkpoint(checkpoint_path, weights_only)
        finally:
            self.optimizers = real


def _is_mock(optimizer) -> bool:
    return isinstance(getattr(optimizer, "_optimizer", optimizer), _MockOptimizer)


def make_strategy(t: TrainerConfig) -> str | Strategy:
    """The Lightning strategy for `trainer.strategy`; the config's validate() already refused impossible pairs."""
    if t.strategy == "auto":
        return "auto"
    if t.strategy == "ddp":
        return DDPStrategy()  # gloo on CPU, nccl on GPU (Lightning's default backend per device)
    if t.strategy == "fsdp":
        if t.accelerator == "cpu" or not torch.cuda.is_available():
            raise ConfigError("trainer.strategy=fsdp needs GPUs (Lightning's FSDPStrategy refuses CPU); use trainer.strategy=fsdp2 on CPU")
        blocks = block_classes()
        return FSDPStrategy(
            auto_wrap_policy=shard_unit_classes(),  # decoder layers (vision blocks: see shard_unit_classes)
            activation_checkpointing_policy=blocks if t.activation_checkpointing else None,
            state_dict_type="sharded" if t.sharded_checkpoints else "full",
        )
    if t.strategy == "fsdp2":
        return FSDP2Strategy(
            activation_checkpointing=t.activation_checkpointing,
            data_parallel_size=t.devices * t.num_nodes,
            tensor_parallel_size=1,
            save_distributed_checkpoint=t.sharded_checkpoints,
        )
    raise ConfigError(f"trainer.strategy must be auto, ddp, fsdp or fsdp2, got '{t.strategy}'")


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
    iterations instead (RL) pass their own checkpoint callback and False.

    Every stage also gets: its data-order record (k15.callbacks.data_order: RL's drawn.jsonl, or with
    trainer.record_data_order the example indices of each step), a checkpoint and a non-zero exit on
    SIGTERM / SIGUSR1, and the line a resumed stage prints (k15.callbacks.checkpoint).
    """
    t = cfg.trainer
    stage, unit = stage_dir.name, "step" if step_checkpoints else "iteration"
    # First in the list: a checkpoint written in the same on_train_batch_end must count this batch.
    records = [DrawnPrompts(stage_dir / "drawn.jsonl")] if unit == "iteration" else (
        [ExampleOrder(stage_dir / "data_order.jsonl")] if t.record_data_order else [])
    extra, last = [], None
    if step_checkpoints:
        last = ModelCheckpoint(
            dirpath=str(stage_dir / "checkpoints"),
            filename="step{step}",
            auto_insert_metric_name=False,
            every_n_train_steps=t.checkpoint_every_n_steps,
            save_last=True,
            save_top_k=-1,
        )
        extra.append(last)
    if t.progress:
        extra.append(StageProgressBar(stage=str(logger.version)))  # the logger's version is the stage's name
    return L.Trainer(
        accelerator=t.accelerator,
        devices=t.devices,
        num_nodes=t.num_nodes,
        strategy=make_strategy(t),
        precision=t.precision,
        max_steps=max_steps,
        max_epochs=-1 if max_steps > 0 else 1,
        logger=logger,
        log_every_n_steps=log_every_n_steps or t.log_every_n_steps,
        gradient_clip_val=gradient_clip or None,
        callbacks=records + extra + list(callbacks or []) + [
            PreemptionCheckpoint(stage_dir.parent, stage, unit, last), ResumeReport(stage, unit)],
        enable_progress_bar=t.progress,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        default_root_dir=str(stage_dir),
        enable_checkpointing=step_checkpoints,
        plugins=[AtomicCheckpointIO()],
        # Our loaders place their own batches: RL's yields iteration numbers that every rank must see.
        use_distributed_sampler=False,
    )
