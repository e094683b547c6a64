"""The language decoder: a transformers Llama / Qwen2 causal LM, from a size preset or a local checkpoint.

Building on transformers classes means a real checkpoint directory loads with the same code, and
every stage exports with `save_pretrained` so `AutoModelForCausalLM.from_pretrained` reads it back.
A directory is checked (k15.models.checkpoint_dir) before transformers reads it, so a missing part is
one line naming it; an export reloads its tokenizer once, so a family that rebuilds tokenizers on load
can never silently change the ids.
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
from k15.models.checkpoint_dir import check_model_dir, check_tokenizer_dir
from k15.tokenizer import check_tokenizer_roundtrip, load_tokenizer, stop_token_ids

FAMILIES = {"llama": (LlamaConfig, LlamaForCausalLM), "qwen2": (Qwen2Config, Qwen2ForCausalLM)}
# Reloaded after every export: spaces, specials, the added word, digits, and characters some tokenizers drop.
EXPORT_PROBE = "What is 7-2+4?\n<think>3:7-2=5,5+4=7 wait 5+4=9</think> <answer>8</answer>"


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


def load_decoder(path: str | Path, attn_implementation: str = "sdpa", key: str = "model.init_from") -> PreTrainedModel:
    """A causal LM from a local HF checkpoint directory (config.json + weights; the tokenizer is loaded apart).
    `key` is the setting that named the directory, for the one-line error when a part is missing."""
    check_model_dir(path, key, tokenizer=False)
    path = Path(path)
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
    key = "init_from" if init_from else "model.init_from"
    check_source(cfg, source, key)
    model = load_decoder(source, cfg.attn_implementation, key)
    tok, tok_dir = tokenizer_of(cfg, source, key)
    embedding_rows = model.get_input_embeddings().weight.shape[0]
    if embedding_rows < len(tok):
        raise CheckpointError(
            f"tokenizer in {tok_dir} has {len(tok)} tokens but the model in {source} embeds only {embedding_rows}"
        )
    return model, tok


def check_source(cfg: ModelConfig, source: str | Path, key: str) -> None:
    """Every part of a starting checkpoint (and of `model.tokenizer`) checked before the weights are read."""
    check_model_dir(source, key, tokenizer=cfg.tokenizer is None)
    if cfg.tokenizer is not None:
        check_tokenizer_dir(cfg.tokenizer, "model.tokenizer")


def tokenizer_of(cfg: ModelConfig, source: str | Path, key: str) -> tuple[PreTrainedTokenizerBase, str | Path]:
    """The tokenizer a checkpoint runs with (`model.tokenizer`, else its own) and the directory it came from."""
    tok_dir, tok_key = (cfg.tokenizer, "model.tokenizer") if cfg.tokenizer is not None else (source, key)
    return load_tokenizer(tok_dir, tok_key), tok_dir


def export(model: PreTrainedModel, tok: PreTrainedTokenizerBase, path: str | Path) -> Path:
    """Save model + tokenizer in Hugging Face format (safetensors). On N processes every rank calls
    this (gathering FSDP2 shards is a collective) and rank 0 alone writes the full weights.
    The tokenizer is then reloaded with AutoTokenizer (which picks its class from the saved config)
    and must give the same ids for EXPORT_PROBE, else CheckpointError."""
    path = Path(path)
    weights = full_weights(model)  # `model` itself unless it is sharded
    if is_rank_zero():
        path.mkdir(parents=True, exist_ok=True)
        weights.save_pretrained(str(path))
        tok.save_pretrained(str(path))
    barrier()  # no rank goes on (e.g. to load the export) before it is written
    check_tokenizer_roundtrip(tok, path, EXPORT_PROBE)  # on every rank, so a failure cannot leave ranks waiting
    return path


def generation_eos(model) -> list[int]:
    """The end-of-sequence ids of a model's generation_config, what HF generate stops at (a k15 VLM: its decoder's)."""
    config = (getattr(model, "generation_config", None) or getattr(getattr(model, "decoder", None), "generation_config", None)
              or getattr(getattr(model, "model", None), "generation_config", None))  # a k15.models.hf_vlm wrapper
    eos = getattr(config, "eos_token_id", None)
    return [] if eos is None else [eos] if isinstance(eos, int) else list(eos)


def num_parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
