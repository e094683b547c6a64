"""The vision-language stages of the pipeline (paper §7): vision_tower, vision_joint, cooldown, long_context.

Each trains k15.modules.vlm_train.VLMTrainModule on the shard mixture (k15.data.mixture) with its
own section of the config (k15.config.VLMStageConfig): which parts learn (the rest frozen), the
sources' token shares, the OCR reading loss, and for long context a row-length schedule, a share
of full-attention rows and a new RoPE base. The first vision stage builds the tower and projector
(`vlm.vision`, `vlm.projector`) on the previous stage's text model; later ones load its VLM export.

Data: `vlm.data.shards` names the user's shard sources; when empty, the synthetic world's sources
are written once per run to RUN/data/shards (k15.synthetic.shards) and every vision stage reads them.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import lightning as L
import torch

from k15.config import ExperimentConfig, VLMStageConfig
from k15.data.mixture import MixtureConfig, PretrainDataModule
from k15.models.decoder import load_model_and_tokenizer, num_parameters
from k15.models.policy import export_policy, load_policy, model_kind
from k15.models.vlm import build_vlm
from k15.modules.vlm_train import VLMTrainModule, ocr_batches
from k15.trainer import make_trainer, stage_logger
from k15.write_once import write_once


def vision_shards(cfg: ExperimentConfig, run_dir: Path) -> dict[str, str]:
    """Source name -> shards: the user's (`vlm.data.shards`), else the synthetic world's, written once per run."""
    d = cfg.vlm.data
    if d.shards:
        return dict(d.shards)
    from k15.pipeline import console
    from k15.synthetic.shards import write_sources

    out = run_dir / "data" / "shards"
    settings = {"synthetic": d.synthetic, "per_shard": d.per_shard, "seed": cfg.run.seed, "world": asdict(cfg.world)}

    def write(tmp: Path) -> None:
        console.print(f"writing the synthetic vision-language sources to {out}")
        write_sources(tmp, d.synthetic, "train", cfg.run.seed, d.per_shard, cfg.world)

    write_once(out, settings, write)
    return {name: str(out / name) for name, n in d.synthetic.items() if n > 0 and (out / name).is_dir()}


def start_vlm(cfg: ExperimentConfig, init_from: Path | None):
    """The previous stage's VLM, or a new tower + projector on the previous stage's text model."""
    source = init_from or cfg.model.init_from
    if source is not None and model_kind(source) != "text":  # k15's VLM, or a transformers one (its own tower)
        return load_policy(cfg.model, source)
    decoder, tok = load_model_and_tokenizer(cfg.model, source)
    return build_vlm(cfg.model, tok, cfg.vlm.vision, cfg.vlm.projector, decoder=decoder), tok


def mixture_for(cfg: ExperimentConfig, stage: VLMStageConfig, shards: dict[str, str]) -> MixtureConfig:
    # (weights naming sources without shards are refused by k15.config.validate, and again by MixtureConfig.validate)
    d = cfg.vlm.data
    schedule = list(stage.seq_len_schedule)
    return MixtureConfig(
        shards=shards, weights=dict(stage.weights), seq_len=stage.seq_len, batch_size=stage.batch_size,
        shuffle_buffer=d.shuffle_buffer, num_workers=d.num_workers, max_skip_fraction=d.max_skip_fraction,
        seq_len_schedule=schedule, schedule_batches=max(1, stage.max_steps // len(schedule)) if schedule else 0,
        full_attention_share=stage.full_attention_share,
        weights_end=dict(stage.weights_end), ramp_batches=stage.max_steps if stage.weights_end else 0,
    )


def trained_steps(ckpt_path: Path) -> int:
    """The optimizer steps a checkpoint has seen (a file, or a sharded folder with Lightning's meta.pt)."""
    path = ckpt_path / "meta.pt" if ckpt_path.is_dir() else ckpt_path
    return int(torch.load(path, map_location="cpu", weights_only=False)["global_step"])


def train_vision_stage(cfg: ExperimentConfig, run_dir: Path, stage: str, init_from: Path | None,
                       ckpt_path: Path | None = None) -> Path:
    from k15.pipeline import console

    sc: VLMStageConfig = getattr(cfg, stage)
    L.seed_everything(cfg.run.seed, verbose=False)
    vlm, tok = start_vlm(cfg, init_from)
    vlm.train()
    longest = max([sc.seq_len, *sc.seq_len_schedule])
    if sc.rope_theta > 0:
        from k15.models.rope import set_rope_theta

        set_rope_theta(vlm.decoder, sc.rope_theta)
    if longest > vlm.config.max_position_embeddings:  # the context this stage activates
        vlm.config.max_position_embeddings = longest
    mixture = mixture_for(cfg, sc, vision_shards(cfg, run_dir))
    data = PretrainDataModule.for_model(vlm, tok, mixture, cfg.run.seed)
    done = trained_steps(ckpt_path) if ckpt_path is not None else 0
    data.resume_from(done)  # the streams are deterministic: skip exactly the batches already trained on
    ocr = ocr_batches(vlm, tok, sc.ocr_batch_size, cfg.run.seed, kinds=sc.ocr_kinds, start=done) if sc.ocr_weight > 0 else None
    module = VLMTrainModule(vlm, sc.optim, sc.max_steps, trainable=sc.trainable, ocr_weight=sc.ocr_weight, ocr_stream=ocr,
                            lm_weight=sc.lm_weight)
    module.source_names = mixture.names  # to log each source's realised share
    trained = sum(p.numel() for p in module.trainable_parameters())
    console.print(f"{stage}: {num_parameters(vlm) / 1e6:.2f}M parameters, {trained / 1e6:.2f}M trained "
                  f"({', '.join(sc.trainable)}); sources {mixture.weights}; from {init_from or cfg.model.init_from or 'scratch'}")
    stage_dir = run_dir / stage
    trainer = make_trainer(cfg, stage_dir, stage_logger(run_dir, stage), sc.max_steps, sc.optim.grad_clip)
    trainer.fit(module, datamodule=data, ckpt_path=ckpt_path)
    return export_policy(vlm, tok, stage_dir / "model")
