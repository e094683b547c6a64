"""model.attn_implementation is checked up front: unknown names, and flash-attention where it cannot run."""

import importlib.util

import pytest
import torch

from k15.models import attention
from k15.models.attention import ATTN_IMPLEMENTATIONS, check_attn_implementation


@pytest.fixture
def machine(monkeypatch):
    """Pretend about CUDA and which packages import: machine(cuda=..., installed=...)."""

    def set_up(cuda: bool, installed: tuple[str, ...] = ()):
        real = importlib.util.find_spec
        monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
        monkeypatch.setattr(importlib.util, "find_spec",
                            lambda name, *a: object() if name in installed else
                            (None if name.startswith("flash_attn") else real(name, *a)))

    return set_up


@pytest.mark.parametrize("name", ["sdpa", "eager"])
def test_sdpa_and_eager_run_anywhere(machine, name):
    machine(cuda=False)
    assert check_attn_implementation(name, "cpu") is None
    assert check_attn_implementation(name, "gpu") is None


def test_unknown_name_lists_the_known_ones():
    problem = check_attn_implementation("flash_attn2", "gpu")
    assert "flash_attn2" in problem and all(n in problem for n in ATTN_IMPLEMENTATIONS)
    assert "\n" not in problem


def test_flash_attention_2_on_a_cuda_machine_with_the_package(machine):
    machine(cuda=True, installed=("flash_attn",))
    assert check_attn_implementation("flash_attention_2", "gpu") is None
    assert check_attn_implementation("flash_attention_2", "auto") is None


def test_flash_attention_2_without_the_package_says_how_to_install(machine):
    machine(cuda=True)
    problem = check_attn_implementation("flash_attention_2", "gpu")
    assert "flash_attn" in problem and "pip install -e .[gpu]" in problem


@pytest.mark.parametrize("accelerator", ["cpu", "mps"])
def test_flash_attention_2_on_a_cpu_run_says_use_sdpa(machine, accelerator):
    machine(cuda=True, installed=("flash_attn",))  # even with a GPU and the package: the run is configured off it
    problem = check_attn_implementation("flash_attention_2", accelerator)
    assert f"accelerator={accelerator}" in problem and "sdpa" in problem


def test_flash_attention_2_without_cuda_says_use_sdpa(machine):
    machine(cuda=False)  # the package missing too: installing it would not help here, so say sdpa
    problem = check_attn_implementation("flash_attention_2", "gpu")
    assert "CUDA" in problem and "sdpa" in problem and "pip install" not in problem


def test_flash_attention_3_needs_its_own_package(machine):
    machine(cuda=True, installed=("flash_attn",))  # FA2's package is not FA3's
    assert "flash_attn_interface" in check_attn_implementation("flash_attention_3", "gpu")
    machine(cuda=True, installed=("flash_attn_interface",))
    assert check_attn_implementation("flash_attention_3", "gpu") is None


def test_a_broken_find_spec_counts_as_absent(machine, monkeypatch):
    machine(cuda=True)

    def broken(name, *a):
        raise ValueError(f"{name}.__spec__ is None")

    monkeypatch.setattr(importlib.util, "find_spec", broken)
    assert "not installed" in attention.check_attn_implementation("flash_attention_2", "gpu")


def test_every_name_is_one_transformers_knows():
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    for name in ATTN_IMPLEMENTATIONS:
        assert name in ("sdpa", "eager") or name in ALL_ATTENTION_FUNCTIONS._global_mapping
