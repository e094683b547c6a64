"""The vision tower: a ViT over patches cut with einops, plus the image preprocessing that feeds it.

Layout. The tower has exactly the structure of transformers' Pixtral vision encoder (the tower of
`LlavaForConditionalGeneration` for Pixtral and of `Mistral3ForConditionalGeneration`), so a k15 VLM
exports to a transformers class with identical logits (k15.models.vlm.save_vlm):

    patches   einops `n c (h p1) (w p2) -> n (h w) (c p1 p2)`, then a linear map without bias
              (the same numbers as Pixtral's stride-p convolution, whose kernel is this matrix reshaped)
    ln_pre    RMSNorm
    layers    pre-norm blocks: RMSNorm -> attention (no biases, 2D axial RoPE) -> RMSNorm -> gated MLP
    output    the last block's hidden states, one per patch, row-major (no final norm)

Positions are 2D rotary embeddings (the row index rotates one half of each head's frequencies, the
column index the other), so any image whose sides are multiples of the patch size is valid: square
or not (16x112 with 8-px patches is a 2x14 grid), of any size, without interpolating a position table.
Images of different sizes are encoded in groups of equal size (`encode_groups`).

`ImageProcessor` turns a Pillow image into the tensor the tower reads: RGB (or L), fitted into the
configured maximum side and pixel count keeping its aspect ratio, sides rounded to a multiple of
`unit` (patch size times the projector's token merge), scaled to [0, 1] and normalised with
(x - mean) / std. Images that already fit (the synthetic world draws them so) are not resampled.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange
from PIL import Image
from torch import nn

from k15.errors import DataError

ACTIVATIONS = {"silu": F.silu, "gelu": F.gelu}


@dataclass
class VisionConfig:
    """The vision tower. The default reads the synthetic world's images: 16x224 text strips (one
    token per 16x16 character cell, 14 cells) and small 48x48 / 48x64 pictures; ~130k parameters."""

    patch_size: int = 16
    max_side: int = 224  # images are fitted (aspect ratio kept) within max_side per side ...
    max_pixels: int = 4096  # ... and max_pixels in all; smaller images keep their size
    num_channels: int = 3
    hidden_size: int = 64
    num_layers: int = 2
    num_heads: int = 2
    intermediate_size: int = 128
    hidden_act: str = "silu"  # of the gated MLP: silu | gelu
    rope_theta: float = 10000.0
    pixel_mean: float = 0.5  # pixels in [0, 1] are normalised as (x - mean) / std, every channel alike
    pixel_std: float = 0.5

    def validate(self) -> None:
        if self.hidden_size % self.num_heads:
            raise ValueError(f"vision hidden_size {self.hidden_size} is not a multiple of num_heads {self.num_heads}")
        if (self.hidden_size // self.num_heads) % 4:
            raise ValueError("vision head size must be a multiple of 4 (2D rotary embeddings)")
        if self.hidden_act not in ACTIVATIONS:
            raise ValueError(f"vision hidden_act must be one of {sorted(ACTIVATIONS)}, got {self.hidden_act!r}")
        if self.max_side < self.patch_size or self.max_pixels < self.patch_size**2:
            raise ValueError(f"max_side / max_pixels leave no room for one {self.patch_size}-px patch")


class RMSNorm(nn.Module):
    """transformers' Llama/Pixtral RMSNorm, op for op (so exported logits match exactly)."""

    def __init__(self, size: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(size))
        self.variance_epsilon = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype
        x = x.to(torch.float32)
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.variance_epsilon)
        return self.weight * x.to(dtype)


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


class Attention(nn.Module):
    def __init__(self, cfg: VisionConfig):
        super().__init__()
        d = cfg.hidden_size
        self.num_heads, self.head_dim = cfg.num_heads, d // cfg.num_heads
        self.q_proj = nn.Linear(d, d, bias=False)
        self.k_proj = nn.Linear(d, d, bias=False)
        self.v_proj = nn.Linear(d, d, bias=False)
        self.o_proj = nn.Linear(d, d, bias=False)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        n, L, _ = x.shape
        q, k, v = (proj(x).view(n, L, self.num_heads, self.head_dim).transpose(1, 2)
                   for proj in (self.q_proj, self.k_proj, self.v_proj))
        q = q * cos + _rotate_half(q) * sin
        k = k * cos + _rotate_half(k) * sin
        out = F.scaled_dot_product_attention(q, k, v, scale=self.head_dim**-0.5)
        return self.o_proj(out.transpose(1, 2).reshape(n, L, -1))


class GatedMLP(nn.Module):
    def __init__(self, cfg: VisionConfig):
        super().__init__()
        self.gate_proj = nn.Linear(cfg.hidden_size, cfg.intermediate_size, bias=False)
        self.up_proj = nn.Linear(cfg.hidden_size, cfg.intermediate_size, bias=False)
        self.down_proj = nn.Linear(cfg.intermediate_size, cfg.hidden_size, bias=False)
        self.act = ACTIVATIONS[cfg.hidden_act]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(self.act(self.gate_proj(x)) * self.up_proj(x))


class Block(nn.Module):
    def __init__(self, cfg: VisionConfig):
        super().__init__()
        self.attention_norm = RMSNorm(cfg.hidden_size, eps=1e-5)
        self.attention = Attention(cfg)
        self.ffn_norm = RMSNorm(cfg.hidden_size, eps=1e-5)
        self.feed_forward = GatedMLP(cfg)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        x = x + self.attention(self.attention_norm(x), cos, sin)
        return x + self.feed_forward(self.ffn_norm(x))


class VisionTower(nn.Module):
    """Images [n, C, H, W] (one size, sides multiples of the patch) -> patch features [n, (H/p)*(W/p), hidden]."""

    def __init__(self, cfg: VisionConfig):
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        p, d = cfg.patch_size, cfg.hidden_size
        self.patch_embed = nn.Linear(cfg.num_channels * p * p, d, bias=False)
        self.ln_pre = RMSNorm(d, eps=1e-5)
        self.layers = nn.ModuleList(Block(cfg) for _ in range(cfg.num_layers))
        head_dim = d // cfg.num_heads
        # Pixtral's axial frequencies: the even-indexed ones rotate with the row, the odd ones with the column.
        inv_freq = 1.0 / (cfg.rope_theta ** (torch.arange(0, head_dim, 2, dtype=torch.float) / head_dim))
        self.register_buffer("inv_freq_h", inv_freq[0::2].clone(), persistent=False)
        self.register_buffer("inv_freq_w", inv_freq[1::2].clone(), persistent=False)
        self.reset_parameters()

    def reset_parameters(self, std: float = 0.02) -> None:
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, std=std)
            elif isinstance(module, RMSNorm):
                nn.init.ones_(module.weight)

    def grid(self, height: int, width: int) -> tuple[int, int]:
        p = self.cfg.patch_size
        if height % p or width % p:
            raise DataError(f"an image of {height}x{width} pixels is not a multiple of the {p}-px patch "
                            "(fit it with k15.models.vision.ImageProcessor)")
        return height // p, width // p

    def rope(self, gh: int, gw: int) -> tuple[torch.Tensor, torch.Tensor]:
        """cos, sin [gh*gw, head_dim] for a row-major grid, exactly as Pixtral's rotary module makes them."""
        device = self.inv_freq_h.device
        rows, cols = torch.meshgrid(torch.arange(gh, device=device), torch.arange(gw, device=device), indexing="ij")
        angles = torch.cat([rows.reshape(-1, 1).float() * self.inv_freq_h,
                            cols.reshape(-1, 1).float() * self.inv_freq_w], dim=-1)
        angles = torch.cat([angles, angles], dim=-1)
        return angles.cos(), angles.sin()

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        if pixels.ndim != 4 or pixels.shape[1] != self.cfg.num_channels:
            raise DataError(f"images must be [n, {self.cfg.num_channels}, H, W] tensors, "
                            f"got shape {tuple(pixels.shape)}")
        gh, gw = self.grid(pixels.shape[2], pixels.shape[3])
        p = self.cfg.patch_size
        weight = self.patch_embed.weight
        patches = rearrange(pixels.to(weight.dtype), "n c (h p1) (w p2) -> n (h w) (c p1 p2)", p1=p, p2=p)
        x = self.ln_pre(self.patch_embed(patches))
        cos, sin = self.rope(gh, gw)
        cos, sin = cos.to(x.dtype), sin.to(x.dtype)
        for layer in self.layers:
            x = layer(x, cos, sin)
        return x


def as_image_list(images) -> list[torch.Tensor]:
    """None, a [n, C, H, W] tensor, or a list of [C, H, W] tensors -> a list of [C, H, W] tensors."""
    if images is None:
        return []
    if isinstance(images, torch.Tensor):
        if images.ndim == 3:
            return [images]
        if images.ndim != 4:
            raise DataError(f"images must be [n, C, H, W] or a list of [C, H, W], got shape {tuple(images.shape)}")
        return list(images.unbind(0))
    out = list(images)
    for img in out:
        if not isinstance(img, torch.Tensor) or img.ndim != 3:
            raise DataError("images must be [C, H, W] tensors (convert Pillow images with ImageProcessor)")
    return out


def encode_groups(images: list[torch.Tensor], encode) -> list[torch.Tensor]:
    """Apply `encode` ([n, C, H, W] -> [n, ...]) to groups of equal-size images; results in input order."""
    groups: dict[tuple[int, int], list[int]] = {}
    for i, img in enumerate(images):
        groups.setdefault(tuple(img.shape[-2:]), []).append(i)
    out: list[torch.Tensor | None] = [None] * len(images)
    for idx in groups.values():
        encoded = encode(torch.stack([images[i] for i in idx]))
        for j, i in enumerate(idx):
            out[i] = encoded[j]
    return out


# ------------------------------------------------------------------------------------------------
# Preprocessing


def fit_size(height: int, width: int, max_side: int, max_pixels: int, unit: int) -> tuple[int, int]:
    """The size an image is resampled to: sides multiples of `unit` (at least one unit), at most
    `max_side` each and `max_pixels` in all, aspect ratio kept as well as rounding allows. An image
    that already satisfies this keeps its size."""
    def fits(h: int, w: int) -> bool:
        return max(h, w) <= max_side and h * w <= max_pixels

    if height % unit == 0 and width % unit == 0 and fits(height, width):
        return height, width
    scale = min(1.0, max_side / max(height, width), math.sqrt(max_pixels / (height * width)))
    h = max(unit, round(height * scale / unit) * unit)
    w = max(unit, round(width * scale / unit) * unit)
    while not fits(h, w) and max(h, w) > unit:
        if h >= w:
            h -= unit
        else:
            w -= unit
    return h, w


@dataclass
class ImageProcessor:
    """Pillow image -> normalised [C, H, W] float tensor that a tower with this geometry accepts.

    `fixed`: resample every image to exactly this (height, width) instead of fitting it (towers with
    a fixed position table, e.g. CLIP / SigLIP in a LLaVA checkpoint). `mean` / `std`: one value for
    every channel, or one per channel.
    """

    max_side: int
    max_pixels: int
    unit: int  # sides are multiples of this: patch size x token merge
    num_channels: int = 3
    mean: float | tuple[float, ...] = 0.5
    std: float | tuple[float, ...] = 0.5
    fixed: tuple[int, int] | None = None

    @classmethod
    def for_tower(cls, cfg: VisionConfig, merge: int = 1) -> ImageProcessor:
        return cls(cfg.max_side, cfg.max_pixels, cfg.patch_size * merge, cfg.num_channels,
                   cfg.pixel_mean, cfg.pixel_std)

    def size_for(self, height: int, width: int) -> tuple[int, int]:
        if self.fixed is not None:
            return self.fixed
        return fit_size(height, width, self.max_side, self.max_pixels, self.unit)

    def __call__(self, image: Image.Image) -> torch.Tensor:
        image = image.convert("RGB" if self.num_channels == 3 else "L")
        h, w = self.size_for(image.height, image.width)
        if (h, w) != (image.height, image.width):
            image = image.resize((w, h), Image.Resampling.BICUBIC)
        array = np.asarray(image, dtype=np.float32) / 255.0
        pixels = torch.from_numpy(array.copy())
        pixels = pixels[None] if pixels.ndim == 2 else pixels.permute(2, 0, 1)
        mean = torch.tensor(self.mean, dtype=torch.float32).reshape(-1, 1, 1)
        std = torch.tensor(self.std, dtype=torch.float32).reshape(-1, 1, 1)
        return (pixels - mean) / std


def tower_tokens(height: int, width: int, patch_size: int, merge: int = 1) -> int:
    """Image tokens the decoder sees for an image of height x width pixels."""
    unit = patch_size * merge
    if height % unit or width % unit:
        raise DataError(f"an image of {height}x{width} pixels is not a multiple of {unit} px "
                        f"(patch {patch_size} x merge {merge})")
    return (height // unit) * (width // unit)


def num_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


__all__ = [
    "VisionConfig", "VisionTower", "ImageProcessor", "RMSNorm", "as_image_list", "encode_groups",
    "fit_size", "tower_tokens", "num_parameters",
]
