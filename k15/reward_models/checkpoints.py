"""Reward-model directories: a Hugging Face export plus a small marker that says which RM it is.

    RM_DIR/config.json, model.safetensors, tokenizer files   save_pretrained (k15.models.decoder.export)
    RM_DIR/k15_reward_model.json                             {"kind": "classic" | "cot", "max_len": ...,
                                                              "verdict_format": ... (cot)}

The marker lets a loader refuse, in one line, a directory that is not a reward model of the kind it
expects (a policy export handed to `classic_rm`, a Classic RM handed to `cot_rm`), before any weights are read.
A reward model trained elsewhere has no marker: `read_marker(..., foreign_ok=True)` then accepts a
directory whose config.json names an architecture of the kind (classic: a sequence-classification
model with one output; cot: a causal LM); whether a CoT RM's verdicts parse is checked by running
it (k15.reward_models.judge.probe).
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


def read_marker(path: str | Path, kind: str, key: str, foreign_ok: bool = False) -> dict:
    """The marker of a `kind` reward model in `path`; CheckpointError (one line, naming `key`) otherwise.
    `foreign_ok`: a directory without a marker is read by its config's architecture ({"kind", "foreign": True})."""
    path = Path(path)
    check_model_dir(path, key, tokenizer=True)
    marker = path / MARKER
    if not marker.is_file() and foreign_ok:
        return _foreign(path, kind, key)
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


def _foreign(path: Path, kind: str, key: str) -> dict:
    try:
        config = json.loads((path / "config.json").read_text())
    except ValueError:
        raise CheckpointError(f"{key}={path}: config.json is not JSON") from None
    names = config.get("architectures") or []
    if kind == "classic":
        labels = len(config["id2label"]) if "id2label" in config else config.get("num_labels", 2)  # transformers' default: 2
        ok = any(n.endswith("ForSequenceClassification") for n in names) and labels == 1
        wanted = "a sequence-classification model with one output (num_labels=1)"
    else:
        ok = any(n.endswith("ForCausalLM") for n in names)
        wanted = "a causal language model"
    if not ok:
        raise CheckpointError(f"{key}={path} is not a {kind} reward model: no {MARKER}, and its architecture "
                              f"{', '.join(names) or '(none named)'} is not {wanted}")
    return {"kind": kind, "foreign": True}
