"""Local transformers VLM checkpoints behind k15's VLM interface: LLaVA-style, Mistral3, Qwen2-VL, Qwen2.5-VL.

    model = load_hf_vlm("/path/to/checkpoint")            # a directory with config.json + weights
    pixels = model.image_processor()(pil_image)           # [C, H, W], resized and normalised for its tower
    n = model.tokens_per_image(*pixels.shape[-2:])         # image features (image tokens) of this image
    ids = model.image_tokens(*pixels.shape[-2:])           # what replaces its placeholder in the text
    ids, pixels = model.expand_prompt(tok(chat_text).input_ids, [pil_image])  # = AutoProcessor(chat_text, images)
    out = model(input_ids, images=[pixels, ...], labels=..., attention_mask=... | position_ids=..., doc_ids=...)
    tokens = model.generate(prompts, images, max_new_tokens=16)

The interface is the one of k15.models.vlm.VisionLanguageModel (`freeze(model, ("decoder",))`
included: its tower / projector / decoder are the checkpoint's): text holds each image's
`image_tokens` (`tokens_per_image` image tokens, the checkpoint's `image_token_id`), images come as a
flat list in reading order, placeholders and images are checked against each other (a mismatch is
a `DataError` naming both counts), and packed batches (k15.data.packing) work.

Image layout. One flat run of image tokens per image, except for a Pixtral tower (Mistral3, LLaVA
with a Pixtral tower) whose tokenizer has PixtralProcessor's row tokens ([IMG_BREAK], [IMG_END], or
the names its processor_config.json gives): there, as PixtralProcessor writes it, an image of
H x W pixels is H / unit rows of W / unit image tokens (unit = patch x merge), each row ended by
[IMG_BREAK] and the last by [IMG_END]; the model fills only the image tokens (row-major), the
breaks are ordinary tokens. `load_hf_vlm` / `hf_vlm_facts` read the row ids from the tokenizer
(`image_row_ids`) and keep them on the wrapper (`image_rows`). k15's own exports in the LLaVA /
Mistral3 layouts have no [IMG_BREAK] in their tokenizer and keep their flat runs (they were
trained that way).

What each family needs, built here from the images and the ids:
- LLaVA (tower CLIP / SigLIP: one fixed square size; Pixtral: any size, `image_sizes`) and Mistral3
  (Pixtral tower with a 2x2 merge, `image_sizes`): `pixel_values` [n, C, H, W].
- Qwen2-VL / Qwen2.5-VL: `pixel_values` as flattened patches (einops, the layout of their image
  processor, each image repeated over the temporal patch), `image_grid_thw`, and `mm_token_type_ids`
  (1 at image tokens). The decoder uses 3D rotary positions (M-RoPE) that are computed from
  `mm_token_type_ids`: Qwen2-VL refuses to run without it, but Qwen2.5-VL silently falls back to 1D
  positions and so to wrong logits. We always pass it; in packed rows we compute the 3D positions
  per document ourselves (restarting at each document) and pass them with the text positions.

Images go through the checkpoint's own image processor: `load_hf_vlm` loads it from the directory's
`preprocessor_config.json` with `AutoImageProcessor` (the backend AutoProcessor would pick: torchvision
where it imports, else PIL/numpy) and keeps it on the wrapper (`hf_image_processor`). Its resizing
(Qwen's min/max pixels, CLIP's shortest edge + center crop, Pixtral's longest edge), rescaling and
normalisation are the model's, so `image_processor()` + `model_inputs` give exactly the processor's
`pixel_values` (and `image_grid_thw`), and `expand_prompt` gives the ids AutoProcessor gives for a
prompt with one placeholder per image. We do not use AutoProcessor itself: the Qwen2-VL processors
need torchvision for their video half, which does not import on CPU-only machines.
A directory without `preprocessor_config.json` (e.g. a k15 export) gets k15's ImageProcessor with
the normalisation of `k15_vlm.json`, else the family's default.
"""

from __future__ import annotations

import json
import shutil
import math
from pathlib import Path

import torch
from einops import rearrange, repeat
from PIL import Image
from torch import nn
from transformers import AutoConfig, AutoImageProcessor, AutoModelForImageTextToText, PreTrainedModel
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import smart_resize
from transformers.utils import is_torchvision_available

from k15.data.packing import IGNORE, document_mask
from k15.errors import CheckpointError, DataError
from k15.models.checkpoint_dir import check_tokenizer_dir
from k15.models.vision import ImageProcessor, as_image_list, tower_tokens
from k15.models.vlm import _stop_ids, check_placeholders, expand_placeholders, image_rows
from k15.tokenizer import load_tokenizer

CLIP_MEAN, CLIP_STD = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)
FAMILIES = ("llava", "mistral3", "qwen2_vl", "qwen2_5_vl")
PROCESSOR_FILES = ("preprocessor_config.json", "processor_config.json", "video_preprocessor_config.json",
                   "chat_template.json", "chat_template.jinja")
LLAVA_TOWERS = ("clip_vision_model", "siglip_vision_model", "pixtral")
PIXTRAL_ROW_TOKENS = ("[IMG_BREAK]", "[IMG_END]")  # PixtralProcessor's defaults: a row's end, the image's end


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


def _fixed_resize(height: int, width: int, size) -> tuple[int, int] | None:
    """The size a CLIP / SigLIP-style processor resizes to; None for a rule we do not compute."""
    if size.get("height") and size.get("width"):
        return size["height"], size["width"]
    short = size.get("shortest_edge")
    if short and not size.get("longest_edge"):  # the short side becomes `short`, the long one is truncated
        if height <= width:
            return short, int(short * width / height)
        return int(short * height / width), short
    return None


def _pixtral_resize(height: int, width: int, size, unit: int) -> tuple[int, int]:
    """Pixtral: shrink (never grow) into the longest edge, floor the sides, then round them up to `unit`."""
    limit_h, limit_w = ((size["longest_edge"],) * 2 if size.get("longest_edge") else (size["height"], size["width"]))
    ratio = max(height / limit_h, width / limit_w)
    if ratio > 1:
        height, width = int(math.floor(height / ratio)), int(math.floor(width / ratio))
    return ((height - 1) // unit + 1) * unit, ((width - 1) // unit + 1) * unit


class CheckpointImageProcessor:
    """A checkpoint's own transformers image processor with the face of k15's ImageProcessor.

    `processor(pil_image)` -> pixels [C, H, W] that HFVisionLanguageModel.model_inputs turns back into
    exactly the processor's `pixel_values` (and `image_grid_thw`); `size_for(height, width)` -> the
    (height, width) it produces, computed from the size alone (k15.data.vision_prompts counts
    placeholders from image headers).

    layout: "qwen" (the processor returns flattened patches; we fold them back into the image, one
    temporal copy, which re-patching repeats exactly), "pixtral" (any size; sides multiples of `unit`,
    the tower's patch times the merge, passed as the patch size the way PixtralProcessor does) or
    "fixed" (CLIP / SigLIP: one size).
    """

    def __init__(self, processor, layout: str, unit: int):
        self.processor, self.layout, self.unit = processor, layout, unit

    def __call__(self, image: Image.Image) -> torch.Tensor:
        kwargs = {"patch_size": {"height": self.unit, "width": self.unit}} if self.layout == "pixtral" else {}
        out = self.processor(images=[image], return_tensors="pt", **kwargs)
        pixels = out["pixel_values"]
        if self.layout == "qwen":
            pixels = self._unpatch(pixels, out["image_grid_thw"][0].tolist())
        else:
            pixels = pixels[0]
        return pixels.to(torch.float32).contiguous()

    def _unpatch(self, patches: torch.Tensor, grid: list[int]) -> torch.Tensor:
        """Qwen's rows of (c t p1 p2) patches, merge window by merge window -> the first frame [C, H, W]."""
        t, gh, gw = grid
        p, m = self.processor.patch_size, self.processor.merge_size
        frames = rearrange(patches, "(gh gw m1 m2) (c t p1 p2) -> t c (gh m1 p1) (gw m2 p2)",
                           gh=gh // m, gw=gw // m, m1=m, m2=m, t=self.processor.temporal_patch_size, p1=p, p2=p)
        return frames[0]

    def size_for(self, height: int, width: int) -> tuple[int, int]:
        proc, size = self.processor, self.processor.size or {}
        if not proc.do_resize:
            out = (height, width)
        elif self.layout == "qwen":
            try:
                out = smart_resize(height, width, factor=self.unit, min_pixels=size["shortest_edge"],
                                   max_pixels=size["longest_edge"])
            except ValueError as exc:  # an aspect ratio beyond 200:1
                raise DataError(f"an image of {height}x{width} pixels: {exc}") from None
        elif self.layout == "pixtral":
            out = _pixtral_resize(height, width, size, self.unit)
        else:
            out = _fixed_resize(height, width, size)
        if self.layout == "fixed" and getattr(proc, "do_center_crop", False):
            out = (proc.crop_size["height"], proc.crop_size["width"])
        if out is None:  # a resize rule not computed above: measure it on a blank image
            out = tuple(self(Image.new("RGB", (width, height))).shape[-2:])
        return out


class HFVisionLanguageModel(nn.Module):
    """A transformers image-text-to-text model (one of FAMILIES) with k15's `forward(input_ids, images, ...)`."""

    def __init__(self, model: PreTrainedModel, mean=None, std=None, image_processor=None,
                 image_rows: tuple[int, int] | None = None):
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
        # ([IMG_BREAK], [IMG_END]) ids: a Pixtral tower's images are written in rows (image_row_ids); None: flat
        self.image_rows = None
        if image_rows is not None:
            if self.tower_type != "pixtral":
                raise CheckpointError(f"image rows are PixtralProcessor's layout; this checkpoint's tower is "
                                      f"{self.tower_type!r}")
            self.image_rows = tuple(image_rows)
        # The checkpoint's transformers image processor (load_hf_vlm reads it), or None: k15's ImageProcessor.
        self.hf_image_processor = image_processor
        self._pixels = None
        if image_processor is not None:
            self._pixels = self._checkpoint_pixels(image_processor)
            # mean / std then describe the processor's pixels (callers un-normalise them to show images)
            normalised = getattr(image_processor, "do_normalize", True)
            self.mean = tuple(image_processor.image_mean) if normalised else 0.0
            self.std = tuple(image_processor.image_std) if normalised else 1.0

    def _checkpoint_pixels(self, processor) -> CheckpointImageProcessor:
        if self.family in ("qwen2_vl", "qwen2_5_vl"):
            theirs = (processor.patch_size, processor.merge_size, processor.temporal_patch_size)
            ours = (self.patch_size, self.merge, self.temporal_patch)
            if theirs != ours:
                raise CheckpointError(f"the image processor's patch / merge / temporal patch sizes {theirs} "
                                      f"differ from the model's {ours}")
            return CheckpointImageProcessor(processor, "qwen", self.patch_size * self.merge)
        layout = "pixtral" if self.tower_type == "pixtral" else "fixed"
        return CheckpointImageProcessor(processor, layout, self.patch_size * self.merge)

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

    def image_tokens(self, height: int, width: int) -> list[int]:
        """The ids that replace one image placeholder: one flat run of `tokens_per_image` image tokens, or
        (a Pixtral checkpoint with row tokens) its rows, each ended by [IMG_BREAK], the last by [IMG_END]."""
        n = self.tokens_per_image(height, width)
        if self.image_rows is None:
            return [self.image_token_id] * n
        unit = self.patch_size * self.merge
        return image_rows(self.image_token_id, *self.image_rows, height // unit, width // unit)

    def image_processor(self, max_side: int = 448, max_pixels: int = 448 * 448):
        """Pillow image -> pixels [C, H, W] for this checkpoint's tower, with `size_for(height, width)`.

        The checkpoint's own image processor when its directory has one (its limits apply; the
        arguments are unused), else k15's ImageProcessor (fixed-size towers ignore the limits)."""
        if self._pixels is not None:
            return self._pixels
        if self.fixed_size is not None:
            s = self.fixed_size
            return ImageProcessor(s, s * s, self.patch_size, self.num_channels, self.mean, self.std, fixed=(s, s))
        unit = self.patch_size * self.merge
        return ImageProcessor(max_side, max_pixels, unit, self.num_channels, self.mean, self.std)

    def expand_prompt(self, ids: list[int], images) -> tuple[list[int], list[torch.Tensor]]:
        """Prompt ids with one image token per image (as a chat template writes it) and the images
        (Pillow, or pixels [C, H, W]) -> ids with each image's run of tokens, and pixels: what the
        family's AutoProcessor gives for the same text and images."""
        processor = self.image_processor()
        pixels = [img if isinstance(img, torch.Tensor) else processor(img) for img in images]
        layouts = [self.image_tokens(p.shape[-2], p.shape[-1]) for p in pixels]
        return expand_placeholders(list(ids), self.image_token_id, layouts), pixels

    @property
    def image_marks(self) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """The ids the family writes before and after each image's run of image tokens (Qwen-VL's vision
        start / end; none for LLaVA), as its chat template and processor do."""
        cfg = self.model.config
        start, end = getattr(cfg, "vision_start_token_id", None), getattr(cfg, "vision_end_token_id", None)
        return ((start,) if start is not None else ()), ((end,) if end is not None else ())

    def save_processor(self, path: str | Path) -> None:
        """The checkpoint's processor files into an export, as they came (a re-save would rewrite them: other
        keys, another class name), so the export processes images as it did; else the processor's own save."""
        source = getattr(self, "source_dir", None)
        for name in PROCESSOR_FILES if source is not None else ():
            if (source / name).is_file() and not (Path(path) / name).exists():
                shutil.copyfile(source / name, Path(path) / name)
        if self.hf_image_processor is not None and not (Path(path) / "preprocessor_config.json").exists():
            self.hf_image_processor.save_pretrained(str(path))

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
        check_placeholders(input_ids, self.image_token_id,
                           [self.image_tokens(img.shape[-2], img.shape[-1]) for img in images])
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
    """Normalisation for k15's ImageProcessor when there is no image processor: a k15 export's, else defaults."""
    side = path / "k15_vlm.json"
    if side.is_file():
        vision = json.loads(side.read_text())["vision"]
        return vision["pixel_mean"], vision["pixel_std"]
    return None, None


def load_image_processor(path: str | Path, backend: str | None = None):
    """The transformers image processor of a checkpoint directory, or None when it has no
    preprocessor_config.json. `backend`: "pil" | "torchvision"; by default the one AutoProcessor
    picks (torchvision where it imports, else pil; naming pil ourselves skips transformers' warning)."""
    path = Path(path)
    if not (path / "preprocessor_config.json").is_file():
        return None
    backend = backend or ("torchvision" if is_torchvision_available() else "pil")
    try:
        return AutoImageProcessor.from_pretrained(str(path), local_files_only=True, backend=backend)
    except (OSError, ValueError, ImportError) as exc:
        reason = str(exc).strip().splitlines()[0]
        raise CheckpointError(f"cannot load the image processor in {path}: {reason}") from None


def _pixtral_tower(config) -> bool:
    return getattr(getattr(config, "vision_config", None), "model_type", None) == "pixtral"


def image_row_ids(path: str | Path, config, tok=None) -> tuple[int, int] | None:
    """([IMG_BREAK], [IMG_END]) ids when a Pixtral-tower checkpoint's tokenizer has PixtralProcessor's row
    tokens (their names from processor_config.json when it gives them), else None: one flat run per image.

    `tok`: the tokenizer the checkpoint runs with (model.tokenizer); by default the directory's own.
    The processor's patch and merge sizes must be the model's (its token count depends on them)."""
    if not _pixtral_tower(config):
        return None
    path = Path(path)
    processor = {}
    if (path / "processor_config.json").is_file():
        try:
            processor = json.loads((path / "processor_config.json").read_text())
        except ValueError as exc:
            raise CheckpointError(f"{path / 'processor_config.json'}: {exc}") from None
        processor = processor if isinstance(processor, dict) else {}
    if tok is None:
        try:
            check_tokenizer_dir(path, "the checkpoint")
        except CheckpointError:
            return None  # no tokenizer here: the one the run names (load_hf_policy passes it) decides
        tok = load_tokenizer(path, "the checkpoint")
    vocab = tok.get_vocab()
    row_break = processor.get("image_break_token") or PIXTRAL_ROW_TOKENS[0]
    image_end = processor.get("image_end_token") or PIXTRAL_ROW_TOKENS[1]
    if row_break not in vocab:
        return None  # k15's own exports: flat runs, as they were trained
    if image_end not in vocab:
        raise CheckpointError(f"{path}: the tokenizer has the row break {row_break!r} but no image end "
                              f"{image_end!r}; PixtralProcessor writes both")
    merge = int(getattr(config, "spatial_merge_size", 1)) if config.model_type == "mistral3" else 1
    ours = (int(config.vision_config.patch_size), merge)
    theirs = (processor.get("patch_size", ours[0]), processor.get("spatial_merge_size", 1))
    if processor and theirs != ours:
        raise CheckpointError(f"{path / 'processor_config.json'}: patch / spatial merge sizes {tuple(theirs)} differ "
                              f"from the model's {ours}")
    return vocab[row_break], vocab[image_end]


def hf_vlm_facts(path: str | Path, tok=None) -> HFVisionLanguageModel:
    """The wrapper on a weightless (meta-device) model: image token counts (its image layout included),
    image text and processor of a checkpoint, for checks that must not read its weights (k15.preflight).
    `tok` as for image_row_ids."""
    path = Path(path)
    config = AutoConfig.from_pretrained(str(path), local_files_only=True)
    with torch.device("meta"):
        model = AutoModelForImageTextToText.from_config(config)
    return HFVisionLanguageModel(model, *_pixel_stats(path), load_image_processor(path),
                                 image_row_ids(path, config, tok))


def load_hf_vlm(path: str | Path, attn_implementation: str = "sdpa", dtype: torch.dtype = torch.float32,
                image_backend: str | None = None, tok=None) -> HFVisionLanguageModel:
    """A local LLaVA / Mistral3 / Qwen2-VL / Qwen2.5-VL checkpoint directory, ready to train, with its
    own image processor (see load_image_processor for `image_backend`) and image layout (image_row_ids,
    for `tok`)."""
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
    wrapper = HFVisionLanguageModel(model, mean, std, load_image_processor(path, image_backend),
                                    image_row_ids(path, config, tok))
    wrapper.source_dir = path  # its processor files travel with every export (save_processor)
    return wrapper
