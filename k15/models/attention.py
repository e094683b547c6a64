"""Which attention kernels `model.attn_implementation` may name, checked before anything is built.

    problem = check_attn_implementation(cfg.model.attn_implementation, cfg.trainer.accelerator)
    if problem: raise ConfigError(problem)

All of them run packed rows (k15.data.packing.model_inputs): sdpa and eager through the mask
transformers builds from the restarting position_ids, the flash-attention ones through their
variable-length kernels. The flash-attention ones need CUDA and their package; without them
transformers would fail late (at load) or, worse, a CPU run would be configured for a kernel it
cannot have, so the check says so up front, in one line.
"""

from __future__ import annotations

import importlib.util

import torch

ATTN_IMPLEMENTATIONS = ("sdpa", "eager", "flash_attention_2", "flash_attention_3")

# the module each flash kernel comes from, and how to get it
_FLASH_PACKAGES = {
    "flash_attention_2": ("flash_attn", "pip install -e .[gpu]"),
    "flash_attention_3": ("flash_attn_interface", "build FlashAttention-3 from flash-attention's hopper/ directory"),
}
_NO_CUDA_ACCELERATORS = ("cpu", "mps")


def _importable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a broken install or a half-imported module counts as absent
        return False


def check_attn_implementation(name: str, accelerator: str) -> str | None:
    """A one-line problem with running attention kernel `name` on `accelerator`, or None when it can run."""
    if name not in ATTN_IMPLEMENTATIONS:
        return f"model.attn_implementation={name!r} is unknown; known: {', '.join(ATTN_IMPLEMENTATIONS)}"
    if name not in _FLASH_PACKAGES:
        return None
    module, install = _FLASH_PACKAGES[name]
    # no CUDA first: installing the package would not help there
    if accelerator in _NO_CUDA_ACCELERATORS or not torch.cuda.is_available():
        where = f"trainer.accelerator={accelerator}" if accelerator in _NO_CUDA_ACCELERATORS else "no CUDA device is visible"
        return f"model.attn_implementation={name} needs a CUDA GPU, but {where}; use model.attn_implementation=sdpa"
    if not _importable(module):
        return (f"model.attn_implementation={name} needs the {module} package, which is not installed; "
                f"{install} on this CUDA machine, or use model.attn_implementation=sdpa")
    return None
