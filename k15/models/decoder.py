"""The language decoder: a transformers Llama / Qwen2 causal LM, from a size preset or a local checkpoint.

Building on transformers classes means a real checkpoint directory loads with the same code, and
every stage exports with `save_pretrained` so `AutoModelForCausalLM.from_pretrained` reads it back.
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import (
    AutoModelForCausalLM,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    Qwen2Config,
    Qwen2ForCausalLM,
)

from k15.config import ModelConfig
from k15.distributed import barrier, full_weights, is_rank_zero
from k15.errors import CheckpointError
from k15.tokenizer import load_tokenizer, stop_token_ids

FAMILIES = {"llama": (LlamaConfig, LlamaForCausalLM), "qwen2": (Qwen2Config, Qwen2ForCausalLM)}


def build_decoder(cfg: ModelConfig, tok: PreTrainedTokenizerBase) -> PreTrainedModel:
    """A randomly initialised decoder of the configured size, with the tokenizer's vocabulary."""
    config_cls, model_cls = FAMILIES[cfg.family]
    hf_config = config_cls(
        vocab_size=len(tok),
        hidden_size=cfg.hidden_size,
        intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads,
        num_key_value_heads=cfg.num_kv_heads,
        max_position_embeddings=cfg.max_seq_len,
        rope_parameters={"rope_type": "default", "rope_theta": cfg.rope_theta},
        tie_word_embeddings=cfg.tie_embeddings,
        bos_token_id=tok.bos_token_id,
        eos_token_id=stop_token_ids(tok),
        pad_token_id=tok.pad_token_id,
    )
    hf_config._attn_implementation = cfg.attn_implementation
    return model_cls(hf_config)


def load_decoder(path: str | Path, attn_implementation: str = "sdpa") -> PreTrainedModel:
    """A causal LM from a local HF checkpoint directory (config.json + weights)."""
    path = Path(path)
    if not (path / "config.json").is_file():
        raise CheckpointError(f"not a model directory (no config.json): {path}")
    try:
        model = AutoModelForCausalLM.from_pretrained(
            str(path), local_files_only=True, dtype=torch.float32, attn_implementation=attn_implementation
        )
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"cannot load a model from {path}: {str(exc).splitlines()[0]}") from None
    return model


def load_model_and_tokenizer(
    cfg: ModelConfig, init_from: str | Path | None = None
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """The starting point of a stage: `init_from` (a stage's export or `model.init_from`), else a new model."""
    source = init_from or cfg.init_from
    if source is None:
        tok = load_tokenizer(cfg.tokenizer)
        return build_decoder(cfg, tok), tok
    model = load_decoder(source, cfg.attn_implementation)
    tok_dir = cfg.tokenizer if cfg.tokenizer is not None else source
    tok = load_tokenizer(tok_dir)
    embedding_rows = model.get_input_embeddings().weight.shape[0]
    if embedding_rows < len(tok):
        raise CheckpointError(
            f"tokenizer in {tok_dir} has {len(tok)} tokens but the model in {source} embeds only {embedding_rows}"
        )
    return model, tok


def export(model: PreTrainedModel, tok: PreTrainedTokenizerBase, path: str | Path) -> Path:
    """Save model + tokenizer in Hugging Face format (safetensors). On N processes every rank calls
    this (gathering FSDP2 shards is a collective) and rank 0 alone writes the full weights."""
    path = Path(path)
    weights = full_weights(model)  # `model` itself unless it is sharded
    if is_rank_zero():
        path.mkdir(parents=True, exist_ok=True)
        weights.save_pretrained(str(path))
        tok.save_pretrained(str(path))
    barrier()  # no rank goes on (e.g. to load the export) before it is written
    return path


def num_parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
