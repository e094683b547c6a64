"""Model merging (paper §2.4): a weighted average of two checkpoints of one architecture.

    theta = w * theta_a + (1 - w) * theta_b        (w = 0.5: the paper's plain average)

Both checkpoints must have the same tensors with the same shapes; the first difference is refused
with an error naming it, never silently broadcast or skipped.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from k15.errors import CheckpointError


def merge_state_dicts(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], weight: float = 0.5) -> dict[str, torch.Tensor]:
    if not 0.0 <= weight <= 1.0:
        raise ValueError(f"merge weight must be in [0, 1], got {weight}")
    for name in list(a) + [n for n in b if n not in a]:  # the model's own order: 'first' means something
        if name not in a or name not in b:
            raise CheckpointError(f"cannot merge: tensor '{name}' is only in the {'first' if name in a else 'second'} model")
        if a[name].shape != b[name].shape:
            raise CheckpointError(f"cannot merge: tensor '{name}' has shape {tuple(a[name].shape)} vs {tuple(b[name].shape)}")
        if a[name].dtype != b[name].dtype:
            raise CheckpointError(f"cannot merge: tensor '{name}' has dtype {a[name].dtype} vs {b[name].dtype}")
    out = {}
    for name, ta in a.items():
        tb = b[name]
        if ta.is_floating_point():
            out[name] = (weight * ta.double() + (1.0 - weight) * tb.double()).to(ta.dtype)
        else:  # integer buffers (e.g. position ids) must agree; averaging them means nothing
            if not torch.equal(ta, tb):
                raise CheckpointError(f"cannot merge: non-float tensor '{name}' differs between the models")
            out[name] = ta.clone()
    return out


def merge_models(a: nn.Module, b: nn.Module, weight: float = 0.5) -> nn.Module:
    """Merge `b` into (a copy of the weights of) `a`; returns `a` with merged weights."""
    if type(a) is not type(b):
        raise CheckpointError(f"cannot merge a {type(a).__name__} with a {type(b).__name__}")
    merged = merge_state_dicts(a.state_dict(), b.state_dict(), weight)
    a.load_state_dict(merged)
    return a


def merge_checkpoints(path_a: str | Path, path_b: str | Path, out: str | Path, weight: float = 0.5) -> Path:
    """Merge two checkpoint directories of one kind (text, k15 VLM, transformers VLM) into `out`, saved in
    their own format with the first one's tokenizer."""
    from k15.config import ModelConfig
    from k15.models.policy import export_policy, load_policy

    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise CheckpointError(f"output directory {out} is not empty; refusing to overwrite")
    (a, tok), (b, _) = load_policy(ModelConfig(), path_a, "long2short.long_model"), load_policy(
        ModelConfig(), path_b, "long2short.short_model")
    return export_policy(merge_models(a, b, weight), tok, out)
