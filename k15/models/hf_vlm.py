"""Local transformers VLM checkpoints behind k15's VLM interface: LLaVA-style, Mistral3, Qwen2-VL, Qwen2.5-VL.

    model = load_hf_vlm("/path/to/checkpoint")            # a directory with config.json + weights
    pixels = model.image_processor()(pil_image)           # [C, H, W], resized and normalised for its tower
    n = model.tokens_per_image(*pixels.shape[-2:])         # placeholders this image takes in the text
    out = model(input_ids, images=[pixels, ...], labels=..., attention_mask=... | position_ids=..., doc_ids=...)
    tokens = model.generate(prompts, images, max_new_tokens=16)

The interface is the one of k15.models.vlm.VisionLanguageModel (`freeze(model, ("decoder",))`
included: its tower / projector / decoder are the checkpoint's): text holds one run of
`tokens_per_image` image tokens (the checkpoint's `image_token_id`) per image, images come as a
flat list in reading order, placeholders and images are checked against each other (a mismatch is
a `DataError` naming both counts), and packed batches (k15.data.packing) work.

What each family needs, built here from the images and the ids:
- LLaVA (tower CLIP / SigLIP: one fixed square size; Pixtral: any size, `image_sizes`) and Mistral3
  (Pixtral tower with a 2x2 merge, `image_sizes`): `pixel_values` [n, C, H, W].
- Qwen2-VL / Qwen2.5-VL: `pixel_values` as flattened patches (einops, the layout of their image
  processor, each image repeated over the temporal patch), `image_grid_thw`, and `mm_token_type_ids`
  (1 at image tokens). The decoder uses 3D rotary positions (M-RoPE) that are computed from
  `mm_token_type_ids`: Qwen2-VL refuses to run without it, but Qwen2.5-VL silently falls back to 1D
  positions and so to wrong logits. We always pass it; in packed rows we compute the 3D positions
  per document ourselves (restarting at each document) and pass them with the text positions.

Pixel normalisation comes from the checkpoint's `preprocessor_config.json` (image_mean, image_std),
else from `k15_vlm.json` (a k15 export), else the family's default.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from einops import repeat
from torch import nn
from transformers import AutoConfig, AutoModelForImageTextToText, PreTrainedModel

from k15.data.packing import IGNORE, document_mask
from k15.errors import CheckpointError, DataError
from k15.models.vision import ImageProcessor, as_image_list, tower_tokens
from k15.models.vlm import _stop_ids, check_placeholders

CLIP_MEAN, CLIP_STD = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)
FAMILIES = ("llava", "mistral3", "qwen2_vl", "qwen2_5_vl")
LLAVA_TOWERS = ("clip_vision_model", "siglip_vision_model", "pixtral")


class _Part:
    """The parameters of some modules (minus those of `exclude`), each once."""

    def __init__(self, modules: list[nn.Module], exclude: list[nn.Module] = ()):
        self.modules, self.exclude = modules, exclude

    def parameters(self):
        skip = {id(p) for m in self.exclude for p in m.parameters()}
        for module in self.modules:
            for p in module.parameters():
                if id(p) not in skip:
                    skip.add(id(p))
                    yield p


class HFVisionLanguageModel(nn.Module):
    """A transformers image-text-to-text model (one of FAMILIES) with k15's `forward(input_ids, images, ...)`."""

    def __init__(self, model: PreTrainedModel, mean=None, std=None):
        super().__init__()
        self.model = model
        cfg = model.config
        self.family = cfg.model_type
        if self.family not in FAMILIES:
            raise CheckpointError(f"unsupported vision-language model type {self.family!r}; "
                                  f"supported: {', '.join(FAMILIES)}")
        v = cfg.vision_config
        self.image_token_id = cfg.image_token_id
        self.tower_type = v.model_type
        if self.family == "llava" and self.tower_type not in LLAVA_TOWERS:
            raise CheckpointError(f"unsupported LLaVA vision tower {self.tower_type!r}; "
                                  f"supported: {', '.join(LLAVA_TOWERS)}")
        self.patch_size = int(v.patch_size)
        self.merge = int(cfg.spatial_merge_size) if self.family == "mistral3" else 1
        if self.family in ("qwen2_vl", "qwen2_5_vl"):
            self.merge = int(v.spatial_merge_size)
            self.temporal_patch = int(v.temporal_patch_size)
        self.fixed_size = None
        if self.family == "llava" and self.tower_type != "pixtral":
            self.fixed_size = int(v.image_size)
        default_mean = 0.5 if self.tower_type in ("siglip_vision_model",) else CLIP_MEAN
        default_std = 0.5 if self.tower_type in ("siglip_vision_model",) else CLIP_STD
        self.mean = mean if mean is not None else default_mean
        self.std = std if std is not None else default_std
        self.num_channels = int(getattr(v, "num_channels", getattr(v, "in_channels", 3)))

    # ------------------------------------------------------------------ facts

    @property
    def config(self):
        return self.model.config.get_text_config()

    def get_input_embeddings(self) -> nn.Module:
        return self.model.get_input_embeddings()

    def tokens_per_image(self, height: int, width: int) -> int:
        if self.fixed_size is not None:
            s = self.fixed_size
            if (height, width) != (s, s):
                raise DataError(f"this checkpoint's {self.tower_type} tower reads {s}x{s} images, got {height}x{width}")
            cfg = self.model.config
            n = (s // self.patch_size) ** 2 + (1 if self.tower_type == "clip_vision_model" else 0)
            return n - (1 if cfg.vision_feature_select_strategy == "default" else 0)
        return tower_tokens(height, width, self.patch_size, self.merge)

    def image_processor(self, max_side: int = 448, max_pixels: int = 448 * 448) -> ImageProcessor:
        """Pillow image -> pixels for this checkpoint's tower (fixed-size towers ignore the limits)."""
        if self.fixed_size is not None:
            s = self.fixed_size
            return ImageProcessor(s, s * s, self.patch_size, self.num_channels, self.mean, self.std, fixed=(s, s))
        unit = self.patch_size * self.merge
        return ImageProcessor(max_side, max_pixels, unit, self.num_channels, self.mean, self.std)

    # The three parts k15.models.vlm.freeze knows, for the tower-only stage on a real checkpoint.

    @property
    def tower(self) -> _Part:
        inner = self.model.model
        if self.family in ("qwen2_vl", "qwen2_5_vl"):
            return _Part([inner.visual], exclude=[inner.visual.merger])
        return _Part([inner.vision_tower])

    @property
    def projector(self) -> _Part:
        inner = self.model.model
        return _Part([inner.visual.merger if self.family in ("qwen2_vl", "qwen2_5_vl") else inner.multi_modal_projector])

    @property
    def decoder(self) -> _Part:
        return _Part([self.model.model.language_model, self.model.lm_head])

    # ------------------------------------------------------------------ inputs

    def model_inputs(
        self,
        input_ids: torch.Tensor,
        images=None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        doc_ids: torch.Tensor | None = None,
    ) -> dict:
        """Keyword arguments for the transformers model (without labels)."""
        images = as_image_list(images)
        counts = [self.tokens_per_image(img.shape[-2], img.shape[-1]) for img in images]
        check_placeholders(input_ids, self.image_token_id, counts)
        if attention_mask is None and doc_ids is not None:
            attention_mask = document_mask(doc_ids)
        kwargs = {"input_ids": input_ids, "attention_mask": attention_mask, "position_ids": position_ids}
        if self.family in ("qwen2_vl", "qwen2_5_vl"):
            kwargs["mm_token_type_ids"] = (input_ids == self.image_token_id).to(torch.int32)
            if images:
                kwargs["pixel_values"] = torch.cat([self._qwen_patches(img) for img in images])
                kwargs["image_grid_thw"] = torch.tensor(
                    [[1, img.shape[-2] // self.patch_size, img.shape[-1] // self.patch_size] for img in images],
                    device=input_ids.device,
                )
            packed = position_ids is not None or (attention_mask is not None and attention_mask.ndim == 4)
            if packed:
                kwargs["position_ids"] = self._packed_mrope_positions(input_ids, position_ids, doc_ids, counts,
                                                                      kwargs.get("image_grid_thw"))
            return kwargs
        if images:
            sizes = {tuple(img.shape[-2:]) for img in images}
            if len(sizes) == 1:
                kwargs["pixel_values"] = torch.stack(images)
            else:  # Pixtral towers read each image's own size from image_sizes; pad to the largest
                h, w = max(s[0] for s in sizes), max(s[1] for s in sizes)
                batch = images[0].new_zeros(len(images), images[0].shape[0], h, w)
                for i, img in enumerate(images):
                    batch[i, :, : img.shape[-2], : img.shape[-1]] = img
                kwargs["pixel_values"] = batch
            if self.tower_type == "pixtral":
                kwargs["image_sizes"] = torch.tensor([list(img.shape[-2:]) for img in images], device=input_ids.device)
        return kwargs

    def _qwen_patches(self, img: torch.Tensor) -> torch.Tensor:
        p, m = self.patch_size, self.merge
        if img.shape[-2] % (p * m) or img.shape[-1] % (p * m):
            raise DataError(f"an image of {img.shape[-2]}x{img.shape[-1]} pixels is not a multiple of {p * m} px")
        return repeat(img, "c (gh m1 p1) (gw m2 p2) -> (gh gw m1 m2) (c t p1 p2)", m1=m, m2=m, p1=p, p2=p,
                      t=self.temporal_patch)

    def _packed_mrope_positions(self, input_ids, position_ids, doc_ids, counts, grids) -> torch.Tensor:
        """[4, B, T]: text positions, then M-RoPE (t, h, w) positions computed document by document."""
        B, T = input_ids.shape
        if position_ids is None:
            raise DataError("a packed batch for a Qwen2-VL model needs position_ids (k15.data.packing makes them)")
        if doc_ids is None:  # a document starts wherever the positions restart
            doc_ids = (position_ids == 0).long().cumsum(-1)
        mrope = torch.zeros(3, B, T, dtype=torch.long, device=input_ids.device)
        image = 0
        inner = self.model.model
        for b in range(B):
            row_docs = doc_ids[b].tolist()
            start = 0
            while start < T:
                end = start
                while end < T and row_docs[end] == row_docs[start]:
                    end += 1
                seg = input_ids[b, start:end]
                n_tokens = int((seg == self.image_token_id).sum())
                if n_tokens == 0:
                    mrope[:, b, start:end] = torch.arange(end - start, device=input_ids.device)
                else:
                    first, taken = image, 0
                    while taken < n_tokens:
                        taken += counts[image]
                        image += 1
                    pos, _ = inner.get_rope_index(
                        seg[None], mm_token_type_ids=(seg == self.image_token_id)[None].to(torch.int32),
                        image_grid_thw=grids[first:image],
                    )
                    mrope[:, b, start:end] = pos[:, 0]
                start = end
        return torch.cat([position_ids[None].to(mrope.device), mrope], dim=0)

    # ------------------------------------------------------------------ forward, generate

    def forward(self, input_ids, images=None, attention_mask=None, position_ids=None, labels=None, doc_ids=None,
                **kwargs):
        inputs = self.model_inputs(input_ids, images, attention_mask, position_ids, doc_ids)
        if labels is not None:
            labels = labels.masked_fill(input_ids == self.image_token_id, IGNORE)
        return self.model(**inputs, labels=labels, **kwargs)

    @torch.no_grad()
    def generate(self, prompts: list[list[int]], images=None, max_new_tokens: int = 32,
                 stop_token_ids: list[int] | None = None, pad_token_id: int = 0) -> list[list[int]]:
        """Greedy completions with the model's own `generate` (prompts left-padded)."""
        width = max(len(p) for p in prompts)
        device = self.get_input_embeddings().weight.device
        ids = torch.full((len(prompts), width), pad_token_id, dtype=torch.long, device=device)
        mask = torch.zeros_like(ids)
        for r, p in enumerate(prompts):
            ids[r, width - len(p):] = torch.tensor(p, device=device)
            mask[r, width - len(p):] = 1
        flat = [img.to(device) for per_prompt in (images or []) for img in as_image_list(per_prompt)]
        inputs = self.model_inputs(ids, flat, attention_mask=mask)
        inputs = {k: v for k, v in inputs.items() if v is not None}
        stops = _stop_ids(stop_token_ids, self.model)
        out = self.model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False,
                                  eos_token_id=stops or None, pad_token_id=pad_token_id,
                                  temperature=None, top_p=None, top_k=None)
        completions = []
        for row in out[:, width:].tolist():
            for j, t in enumerate(row):
                if t in stops:
                    row = row[: j + 1]
                    break
            completions.append(row)
        return completions


def _pixel_stats(path: Path):
    pre = path / "preprocessor_config.json"
    if pre.is_file():
        data = json.loads(pre.read_text())
        if "image_mean" in data and "image_std" in data:
            return tuple(data["image_mean"]), tuple(data["image_std"])
    side = path / "k15_vlm.json"
    if side.is_file():
        vision = json.loads(side.read_text())["vision"]
        return vision["pixel_mean"], vision["pixel_std"]
    return None, None


def load_hf_vlm(path: str | Path, attn_implementation: str = "sdpa",
                dtype: torch.dtype = torch.float32) -> HFVisionLanguageModel:
    """A local LLaVA / Mistral3 / Qwen2-VL / Qwen2.5-VL checkpoint directory, ready to train."""
    path = Path(path)
    if not (path / "config.json").is_file():
        raise CheckpointError(f"not a model directory (no config.json): {path}")
    try:
        config = AutoConfig.from_pretrained(str(path), local_files_only=True)
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"cannot read the config in {path}: {str(exc).splitlines()[0]}") from None
    if config.model_type not in FAMILIES:
        raise CheckpointError(f"{path}: unsupported vision-language model type {config.model_type!r}; "
                              f"supported: {', '.join(FAMILIES)}")
    try:
        model = AutoModelForImageTextToText.from_pretrained(
            str(path), local_files_only=True, dtype=dtype, attn_implementation=attn_implementation)
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"cannot load a model from {path}: {str(exc).splitlines()[0]}") from None
    mean, std = _pixel_stats(path)
    return HFVisionLanguageModel(model, mean, std)
