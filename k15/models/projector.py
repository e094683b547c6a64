"""The projector: vision-tower patch features -> vectors in the decoder's input-embedding space.

Two kinds (`ProjectorConfig.kind`):

- `mlp` (default): an MLP `linear_1 -> act -> linear_2` to the decoder's hidden size, as in LLaVA.
  With a token merge (`merge=m > 1`), every m x m block of neighbouring patch tokens is first
  normalised (RMSNorm), concatenated and mapped back to the tower width by a linear layer, as in
  Mistral3: m^2 times fewer image tokens. These two layouts are exactly transformers'
  `LlavaMultiModalProjector` (merge 1) and `Mistral3MultiModalProjector` (merge > 1), which is what
  makes the exported model load in transformers with identical logits.
- `embedding_softmax`: logits over a set of the decoder's own input-embedding rows (the readout
  tokens; default every non-special token), and the image token is the softmax-weighted mix of
  those rows. Image tokens then live in the decoder's own embedding space, which is what made a
  tiny VLM learn to read on CPU (shared/calibration.md: text strips with one character per
  cell, an OCR loss on `readout_logits` in the tower-only stage). It has no transformers
  counterpart: such a model saves in k15's own layout (k15.models.vlm.save_vlm).

The merged token order is row-major over blocks, and the features of one block are concatenated in
(channel, row, column) order, like torch's `unfold` in Mistral3's patch merger.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from k15.errors import DataError
from k15.models.vision import RMSNorm

PROJECTOR_KINDS = ("mlp", "embedding_softmax")
PROJECTOR_ACTIVATIONS = {"gelu": F.gelu, "silu": F.silu, "relu": F.relu}


@dataclass
class ProjectorConfig:
    kind: str = "mlp"  # mlp | embedding_softmax
    merge: int = 1  # merge m x m neighbouring patch tokens into one (1 = off, 2 = the usual 2x2)
    hidden_act: str = "gelu"  # mlp: activation between the two linear layers
    bias: bool = True  # mlp: biases of the two linear layers
    # embedding_softmax: the tokens whose input-embedding rows image tokens mix. None = every
    # non-special token of the tokenizer (for the synthetic tokenizer: the characters and "wait").
    readout_tokens: list[str] | None = None

    def validate(self) -> None:
        if self.kind not in PROJECTOR_KINDS:
            raise ValueError(f"projector kind must be one of {PROJECTOR_KINDS}, got {self.kind!r}")
        if self.merge < 1:
            raise ValueError(f"projector merge must be >= 1, got {self.merge}")
        if self.hidden_act not in PROJECTOR_ACTIVATIONS:
            raise ValueError(f"projector hidden_act must be one of {sorted(PROJECTOR_ACTIVATIONS)}, "
                             f"got {self.hidden_act!r}")


class PatchMerger(nn.Module):
    """[n, gh*gw, d] -> [n, (gh/m)*(gw/m), d]: concatenate each m x m block, then a linear map."""

    def __init__(self, dim: int, merge: int):
        super().__init__()
        self.merge = merge
        self.merging_layer = nn.Linear(dim * merge * merge, dim, bias=False)

    def forward(self, x: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        gh, gw = grid
        m = self.merge
        if gh % m or gw % m:
            raise DataError(f"a {gh}x{gw} patch grid cannot be merged in {m}x{m} blocks")
        x = rearrange(x, "n (h m1 w m2) d -> n (h w) (d m1 m2)", h=gh // m, m1=m, w=gw // m, m2=m)
        return self.merging_layer(x)


class Projector(nn.Module):
    """Tower features [n, gh*gw, d_vision] -> image tokens [n, gh*gw / merge^2, d_text]."""

    def __init__(self, cfg: ProjectorConfig, vision_hidden: int, text_hidden: int, norm_eps: float = 1e-6,
                 readout_ids: list[int] | None = None):
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        if cfg.merge > 1:
            self.norm = RMSNorm(vision_hidden, eps=norm_eps)
            self.patch_merger = PatchMerger(vision_hidden, cfg.merge)
        if cfg.kind == "mlp":
            self.linear_1 = nn.Linear(vision_hidden, text_hidden, bias=cfg.bias)
            self.linear_2 = nn.Linear(text_hidden, text_hidden, bias=cfg.bias)
            self.act = PROJECTOR_ACTIVATIONS[cfg.hidden_act]
        else:
            if not readout_ids:
                raise ValueError("an embedding_softmax projector needs the token ids of its readout rows")
            self.register_buffer("readout_ids", torch.tensor(readout_ids, dtype=torch.long))
            self.readout = nn.Linear(vision_hidden, len(readout_ids))
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, std=0.02)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

    def merged(self, x: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        if self.cfg.merge == 1:
            return x
        return self.patch_merger(self.norm(x), grid)

    def readout_logits(self, x: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        """embedding_softmax: logits [n, tokens, len(readout_ids)] over the readout rows (e.g. for an OCR loss)."""
        if self.cfg.kind != "embedding_softmax":
            raise ValueError("readout_logits needs an embedding_softmax projector")
        return self.readout(self.merged(x, grid))

    def forward(self, x: torch.Tensor, grid: tuple[int, int],
                input_embeddings: torch.Tensor | None = None) -> torch.Tensor:
        """`input_embeddings`: the decoder's embedding matrix [vocab, d_text] (embedding_softmax only)."""
        if self.cfg.kind == "mlp":
            return self.linear_2(self.act(self.linear_1(self.merged(x, grid))))
        if input_embeddings is None:
            raise ValueError("an embedding_softmax projector needs the decoder's input embeddings")
        probs = torch.softmax(self.readout_logits(x, grid).float(), dim=-1).to(input_embeddings.dtype)
        return probs @ input_embeddings[self.readout_ids]


def default_readout_ids(tok) -> list[int]:
    """Every non-special token of a tokenizer, in id order."""
    special = set(tok.all_special_ids)
    return [i for i in range(len(tok)) if i not in special]
