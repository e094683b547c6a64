"""A stage's model, text or vision-language: load it from a directory, save it back in its own format.

Three kinds of directory, told apart by their files before any weights are read (`model_kind`):
    k15_vlm   k15's own VLM (k15_vlm.json, k15.models.vlm.save_vlm): the synthetic world's VLM
    hf_vlm    a transformers vision-language checkpoint of a supported family (config.json's
              model_type: llava, mistral3, qwen2_vl, qwen2_5_vl), wrapped by k15.models.hf_vlm; the
              tokenizer the run uses decides a Pixtral tower's image layout (rows ended by
              [IMG_BREAK] / [IMG_END] as PixtralProcessor writes them, or k15's flat runs)
    text      anything else: a transformers causal LM (k15.models.decoder)
A vision-language checkpoint of another family is refused with one line naming its type and the
families that are supported. Every stage (SFT, the vision stages, RL, eval, long2short) loads
through `load_policy` and saves through `export_policy`, so a checkpoint leaves in its own format.
"""

from __future__ import annotations

import json
from pathlib import Path

from torch import nn
from transformers import PreTrainedTokenizerBase

from k15.config import ModelConfig
from k15.distributed import barrier, full_weights, is_rank_zero
from k15.errors import CheckpointError
from k15.models.decoder import EXPORT_PROBE, check_source, export, load_model_and_tokenizer, tokenizer_of
from k15.models.hf_vlm import FAMILIES, HFVisionLanguageModel, load_hf_vlm
from k15.models.vlm import VisionLanguageModel, is_vlm_dir, load_vlm, save_vlm
from k15.tokenizer import check_tokenizer_roundtrip

VLM_MODULES = (VisionLanguageModel, HFVisionLanguageModel)


def is_vlm(model: nn.Module) -> bool:
    """A model that reads images (k15's VLM or a transformers one): image prompts, the vision engine."""
    return isinstance(model, VLM_MODULES)


def model_kind(path: str | Path, key: str = "model.init_from") -> str:
    """'k15_vlm', 'hf_vlm' or 'text'; CheckpointError for a vision-language family k15 does not run."""
    path = Path(path)
    if is_vlm_dir(path):
        return "k15_vlm"
    try:
        config = json.loads((path / "config.json").read_text())
    except (OSError, ValueError):
        return "text"  # check_model_dir names what is missing when the stage loads it
    kind = config.get("model_type") if isinstance(config, dict) else None
    if kind in FAMILIES:
        return "hf_vlm"
    if isinstance(config, dict) and config.get("vision_config"):
        arch = ", ".join(config.get("architectures") or []) or "?"
        raise CheckpointError(f"{key}={path}: model type '{kind}' ({arch}) is a vision-language model k15 does not "
                              f"run; supported vision-language families: {', '.join(FAMILIES)}")
    return "text"


def load_policy(cfg: ModelConfig, source: str | Path | None, key: str | None = None
                ) -> tuple[nn.Module, PreTrainedTokenizerBase]:
    """The model and tokenizer in `source` (a stage's export or model.init_from), or a new text model."""
    source = source or cfg.init_from
    key = key or ("model.init_from" if str(source) == str(cfg.init_from) else "init_from")
    kind = model_kind(source, key) if source is not None else "text"
    if kind == "k15_vlm":
        return load_vlm(source, cfg.attn_implementation)
    if kind == "hf_vlm":
        return load_hf_policy(cfg, source, key)
    return load_model_and_tokenizer(cfg, source)


def load_hf_policy(cfg: ModelConfig, source: str | Path, key: str) -> tuple[HFVisionLanguageModel, PreTrainedTokenizerBase]:
    """A transformers VLM directory: every part checked by file name first, then loaded."""
    check_source(cfg, source, key)
    tok, tok_dir = tokenizer_of(cfg, source, key)
    # the tokenizer decides a Pixtral tower's image layout: rows with [IMG_BREAK] / [IMG_END] (Mistral3,
    # Pixtral-LLaVA downloads, as PixtralProcessor writes them) or one flat run (k15's own exports)
    model = load_hf_vlm(source, cfg.attn_implementation, tok=tok)
    if model.image_token_id >= len(tok):
        raise CheckpointError(f"{key}={source}: the image token id {model.image_token_id} is not in the tokenizer "
                              f"of {tok_dir} ({len(tok)} tokens)")
    return model, tok


def export_policy(model: nn.Module, tok: PreTrainedTokenizerBase, path: str | Path) -> Path:
    """On N processes every rank calls this (gathering shards is collective); rank 0 alone writes."""
    if not is_vlm(model):
        return export(model, tok, path)
    path = Path(path)
    weights = full_weights(model)
    if is_rank_zero():
        if isinstance(model, HFVisionLanguageModel):  # the family's own format: transformers reloads it
            path.mkdir(parents=True, exist_ok=True)
            weights.model.save_pretrained(str(path))
            tok.save_pretrained(str(path))
            model.save_processor(path)
        else:
            save_vlm(weights, tok, path)
    barrier()  # no rank loads the export before it is written
    check_tokenizer_roundtrip(tok, path, EXPORT_PROBE)  # as for text models: the saved tokenizer reloads to the same ids
    return path
