"""A stage's model, text or vision-language: load it from an export directory, save it back.

A directory with k15_vlm.json is a VLM (k15.models.vlm.save_vlm); anything else is a transformers
causal LM (k15.models.decoder). Stages that work on either (RL, eval) go through these two.
"""

from __future__ import annotations

from pathlib import Path

from torch import nn
from transformers import PreTrainedTokenizerBase

from k15.config import ModelConfig
from k15.distributed import barrier, full_weights, is_rank_zero
from k15.models.decoder import EXPORT_PROBE, export, load_model_and_tokenizer
from k15.models.vlm import VisionLanguageModel, is_vlm_dir, load_vlm, save_vlm
from k15.tokenizer import check_tokenizer_roundtrip


def load_policy(cfg: ModelConfig, source: str | Path | None) -> tuple[nn.Module, PreTrainedTokenizerBase]:
    source = source or cfg.init_from
    if source is not None and is_vlm_dir(source):
        return load_vlm(source, cfg.attn_implementation)
    return load_model_and_tokenizer(cfg, source)


def export_policy(model: nn.Module, tok: PreTrainedTokenizerBase, path: str | Path) -> Path:
    """On N processes every rank calls this (gathering shards is collective); rank 0 alone writes."""
    if not isinstance(model, VisionLanguageModel):
        return export(model, tok, path)
    weights = full_weights(model)
    if is_rank_zero():
        save_vlm(weights, tok, path)
    barrier()  # no rank loads the export before it is written
    check_tokenizer_roundtrip(tok, path, EXPORT_PROBE)  # as for text models: the saved tokenizer reloads to the same ids
    return Path(path)
