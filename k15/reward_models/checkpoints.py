"""Reward-model directories: a Hugging Face export plus a small marker that says which RM it is.

    RM_DIR/config.json, model.safetensors, tokenizer files   save_pretrained (k15.models.decoder.export)
    RM_DIR/k15_reward_model.json                             {"kind": "classic" | "cot", "max_len": ...,
                                                              "verdict_format": ... (cot)}

The marker lets a loader refuse, in one line, a directory that is not a reward model of the kind it
expects (a policy export handed to `classic_rm`, a Classic RM handed to `cot_rm`), before any weights are read.
"""

from __future__ import annotations

import json
from pathlib import Path

from transformers import PreTrainedModel, PreTrainedTokenizerBase

from k15.distributed import is_rank_zero
from k15.errors import CheckpointError
from k15.models.checkpoint_dir import check_model_dir
from k15.models.decoder import export

MARKER = "k15_reward_model.json"
KINDS = ("classic", "cot")


def export_reward_model(model: PreTrainedModel, tok: PreTrainedTokenizerBase, path: str | Path, kind: str,
                        **details) -> Path:
    """save_pretrained of model and tokenizer (the tokenizer round trip is checked), then the marker."""
    if kind not in KINDS:
        raise ValueError(f"reward model kind must be one of {', '.join(KINDS)}, got {kind!r}")
    path = export(model, tok, path)
    if is_rank_zero():
        (path / MARKER).write_text(json.dumps({"kind": kind, **details}, indent=2) + "\n")
    return path


def read_marker(path: str | Path, kind: str, key: str) -> dict:
    """The marker of a `kind` reward model in `path`; CheckpointError (one line, naming `key`) otherwise."""
    path = Path(path)
    check_model_dir(path, key, tokenizer=True)
    marker = path / MARKER
    if not marker.is_file():
        raise CheckpointError(f"{key}={path} is not a k15 reward model (no {MARKER}); train one with the "
                              f"{kind}_rm stage")
    try:
        info = json.loads(marker.read_text())
    except ValueError:
        raise CheckpointError(f"{key}={path}: {MARKER} is not JSON") from None
    if not isinstance(info, dict) or info.get("kind") != kind:
        found = info.get("kind") if isinstance(info, dict) else None
        raise CheckpointError(f"{key}={path} is a {found or 'unknown'} reward model, not a {kind} one")
    return info
