"""A tiny decoder from scratch and a small labelled set, shared by the reward-model tests."""

import pytest
import torch

from k15.config import ModelConfig
from k15.models.decoder import build_decoder
from k15.tokenizer import build_synthetic_tokenizer

TINY_MODEL = ModelConfig(hidden_size=32, num_layers=2, num_heads=2, num_kv_heads=2, intermediate_size=64,
                         max_seq_len=64)


@pytest.fixture
def tiny_lm(one_thread):
    tok = build_synthetic_tokenizer()
    torch.manual_seed(0)
    return build_decoder(TINY_MODEL, tok), tok
