"""Raising the RoPE base of a decoder in place, for long-context activation (the paper's stage 3).

    set_rope_theta(vlm.decoder, 1e6)     # then train on the longer rows of MixtureConfig.seq_len_schedule

transformers 5.x keeps the base in `config.rope_parameters["rope_theta"]` and computes the rotary
frequencies (`inv_freq`, a non-persistent buffer) once, when the rotary module is built. So the
config is changed -- `save_pretrained` writes it, and a reload builds the new frequencies -- and the
rotary module is rebuilt from it, which is exactly what a fresh model with that base computes.
"""

from __future__ import annotations

from transformers import PreTrainedModel

from k15.errors import ConfigError


def set_rope_theta(decoder: PreTrainedModel, theta: float, max_positions: int | None = None) -> None:
    """Set the RoPE base of a Llama / Qwen2 causal LM to `theta` (and `max_position_embeddings`, if given)."""
    if theta <= 0:
        raise ConfigError(f"rope_theta must be > 0; got {theta}")
    rotary = getattr(getattr(decoder, "model", None), "rotary_emb", None)
    if rotary is None or not hasattr(rotary, "inv_freq"):
        raise ConfigError(f"{type(decoder).__name__} has no model.rotary_emb to rebase (a Llama / Qwen2 causal LM has)")
    config = decoder.config
    # keep the rest of the rope parameters (the scaling type of a 'linear' / 'yarn' rope stays)
    rope = dict(getattr(config, "rope_parameters", None) or {"rope_type": "default"})
    rope["rope_theta"] = float(theta)
    config.rope_parameters = rope
    if max_positions is not None:
        config.max_position_embeddings = int(max_positions)
    # built on the device of the old one; inv_freq stays float32, as transformers builds it
    decoder.model.rotary_emb = type(rotary)(config=config).to(rotary.inv_freq.device)
