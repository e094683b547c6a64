"""Fixtures shared across test folders: a researcher's kind of checkpoint and data, made by the project."""

from pathlib import Path

import pytest
import torch

PROMPT_SETS = Path(__file__).parent / "data" / "prompt_sets"


@pytest.fixture(scope="session")
def tiny_qwen2(tmp_path_factory) -> Path:
    """A tiny random-init Qwen2ForCausalLM with a byte-level BPE tokenizer and a ChatML template, as a local directory."""
    from tools.make_tiny_checkpoint import make_tiny_checkpoint

    return make_tiny_checkpoint(tmp_path_factory.mktemp("tiny_qwen2"), family="qwen2")


@pytest.fixture
def one_thread():
    """Tiny models: a second thread buys nothing and thrashes when the cores are shared."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
