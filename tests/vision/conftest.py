"""Shared pieces of the vision tests: one thread, the synthetic tokenizer, a small VLM factory."""

from __future__ import annotations

import pytest
import torch

from k15.config import ModelConfig
from k15.models.projector import ProjectorConfig
from k15.models.vision import VisionConfig
from k15.models.vlm import build_vlm
from k15.tokenizer import build_synthetic_tokenizer

SMALL_TEXT = dict(hidden_size=32, num_layers=2, num_heads=4, num_kv_heads=2, intermediate_size=64, max_seq_len=128)
# Non-square 16x112 strips with 8-px patches: a 2x14 grid (28 tokens, 7 with a 2x2 merge).
SMALL_VISION = dict(patch_size=8, hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64, max_side=112,
                    max_pixels=4096)


@pytest.fixture(autouse=True)
def _single_threaded(one_thread):  # tests/conftest.py
    pass


@pytest.fixture(scope="session")
def tok():
    return build_synthetic_tokenizer()


@pytest.fixture
def make_vlm(tok):
    def make(seed: int = 0, perturb: bool = True, tied: bool = True, family: str = "llama", **projector):
        torch.manual_seed(seed)
        cfg = ModelConfig(family=family, tie_embeddings=tied, **SMALL_TEXT)
        vlm = build_vlm(cfg, tok, VisionConfig(**SMALL_VISION), ProjectorConfig(**projector))
        if perturb:  # move the weights off their init, so a silent re-init or a zero bias would show
            with torch.no_grad():
                for p in vlm.parameters():
                    p.add_(0.05 * torch.randn_like(p))
        return vlm.eval()

    return make
