"""k15's vision-language model: vision tower + projector + a transformers decoder (Llama / Qwen2).

Images enter the text as runs of placeholder tokens (`<image>`): an image of H x W pixels takes
`tokens_per_image(H, W)` consecutive placeholders, whose input embeddings are replaced by the image's
projected features (`embed`). Any number of images, of any sizes, at any positions; images are
given as one flat list in reading order (row 0 left to right, then row 1, ...), which is also the
order k15.data.mixture puts them in a packed batch. Placeholders and images are checked against
each other before anything is spliced: a different total, or a run of placeholders that does not
split into whole images, is a `DataError` naming both counts -- never a silent misalignment.

An image's layout in the text (one concept for every place that writes or counts image tokens):
`image_tokens(H, W)` are the ids that replace its one placeholder. Here that is one flat run,
`[image_token_id] * tokens_per_image(H, W)`; a transformers Mistral3 / Pixtral checkpoint
(k15.models.hf_vlm) writes rows instead (`image_rows`: each row of image tokens ended by
[IMG_BREAK], the last by [IMG_END], as PixtralProcessor does). `tokens_per_image` stays the number
of image features (image tokens); a length budget counts `len(image_tokens(H, W))`.
`expand_placeholders` and `check_placeholders` take each image's token list (or its flat count).

    vlm = build_vlm(model_cfg, tok, VisionConfig(), ProjectorConfig())   # or decoder=<a trained text model>
    out = vlm(input_ids, images=[...], position_ids=..., attention_mask=..., labels=...)   # training
    out = vlm(**vlm_inputs(packed_batch))                                # a k15.data.mixture batch
    embeds = vlm.embed(input_ids, images)                                # inputs_embeds, for generation
    tokens = vlm.generate(prompts, images, max_new_tokens=16)            # greedy, HF generate on embeds
    freeze(vlm, parts=("decoder",))                                      # the tower-only stage
    save_vlm(vlm, tok, path); vlm, tok = load_vlm(path)

`forward` takes packed batches as they are (k15.data.packing's varlen form: position_ids that
restart per document, from which transformers builds the block-diagonal mask, and `cu_seq_lens_*`
for flash-attention; or an explicit mask, or `doc_ids` to build one) and ignores the labels at
placeholder positions (an image token is never a prediction target).

Saving (`save_vlm`). With an `mlp` projector the directory is a transformers model:
`LlavaForConditionalGeneration` with a Pixtral vision tower (no token merge) or
`Mistral3ForConditionalGeneration` (token merge), loadable with `AutoModelForImageTextToText` and
giving identical logits for the same pixels (pixel_values normalised as in k15_vlm.json, image
tokens expanded to one `<image>` per feature). An `embedding_softmax` projector has no transformers
counterpart; such a model saves in k15's layout: `decoder/` (a plain transformers causal LM),
`vision.safetensors` (tower + projector). Both layouts carry `k15_vlm.json` (our configs) and the
tokenizer, and `load_vlm` reads both.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from k15.config import ModelConfig
from k15.data.packing import IGNORE, document_mask
from k15.errors import CheckpointError, ConfigError, DataError
from k15.models.decoder import build_decoder, generation_eos, load_decoder
from k15.models.projector import ProjectorConfig, Projector, default_readout_ids
from k15.models.vision import ImageProcessor, VisionConfig, VisionTower, as_image_list, encode_groups, tower_tokens
from k15.models.checkpoint_dir import check_model_dir
from k15.tokenizer import char_token_ids, load_tokenizer

IMAGE_TOKEN = "<image>"
PARTS = ("tower", "projector", "decoder")
SIDE_CAR = "k15_vlm.json"


class VisionLanguageModel(nn.Module):
    def __init__(self, decoder: PreTrainedModel, tower: VisionTower, projector: Projector, image_token_id: int):
        super().__init__()
        self.decoder, self.tower, self.projector = decoder, tower, projector
        self.image_token_id = image_token_id
        rows = decoder.get_input_embeddings().weight.shape[0]
        if not 0 <= image_token_id < rows:
            raise ConfigError(f"image token id {image_token_id} is outside the decoder's {rows} embedding rows")

    # ------------------------------------------------------------------ facts

    @property
    def config(self):
        """The decoder's transformers config (max_position_embeddings, vocab_size, ...)."""
        return self.decoder.config

    @property
    def merge(self) -> int:
        return self.projector.cfg.merge

    def tokens_per_image(self, height: int, width: int) -> int:
        """Image features (image tokens) of an image of height x width pixels."""
        return tower_tokens(height, width, self.tower.cfg.patch_size, self.merge)

    def image_tokens(self, height: int, width: int) -> list[int]:
        """The ids that replace one placeholder: k15's VLM reads one flat run of image tokens."""
        return [self.image_token_id] * self.tokens_per_image(height, width)

    def image_processor(self) -> ImageProcessor:
        """Pillow image -> the pixel tensor this model reads."""
        return ImageProcessor.for_tower(self.tower.cfg, self.merge)

    def get_input_embeddings(self) -> nn.Module:
        return self.decoder.get_input_embeddings()

    def get_output_embeddings(self) -> nn.Module:
        return self.decoder.get_output_embeddings()

    # ------------------------------------------------------------------ images

    def _grid(self, image: torch.Tensor) -> tuple[int, int]:
        self.tokens_per_image(image.shape[-2], image.shape[-1])  # checks divisibility by patch x merge
        return self.tower.grid(image.shape[-2], image.shape[-1])

    def encode_images(self, images) -> list[torch.Tensor]:
        """Image tokens [tokens_per_image, hidden] for every image, in order."""
        images = as_image_list(images)
        if not images:
            return []
        embeddings = self.get_input_embeddings().weight

        def encode(pixels: torch.Tensor) -> torch.Tensor:
            grid = self._grid(pixels[0])
            return self.projector(self.tower(pixels), grid, embeddings)

        return encode_groups(images, encode)

    def readout_logits(self, images) -> list[torch.Tensor]:
        """embedding_softmax projector: logits [tokens, len(readout_ids)] per image (an OCR loss reads these)."""
        images = as_image_list(images)

        def encode(pixels: torch.Tensor) -> torch.Tensor:
            return self.projector.readout_logits(self.tower(pixels), self._grid(pixels[0]))

        return encode_groups(images, encode) if images else []

    # ------------------------------------------------------------------ text + images

    def embed(self, input_ids: torch.Tensor, images=None) -> torch.Tensor:
        """inputs_embeds [B, T, hidden]: token embeddings with each image's features at its placeholders."""
        images = as_image_list(images)
        layouts = [self.image_tokens(img.shape[-2], img.shape[-1]) for img in images]
        check_placeholders(input_ids, self.image_token_id, layouts)
        embeds = self.get_input_embeddings()(input_ids)
        if not images:
            return embeds
        features = torch.cat(self.encode_images(images), dim=0).to(embeds.dtype)
        mask = (input_ids == self.image_token_id).unsqueeze(-1)
        return embeds.masked_scatter(mask, features)

    def forward(
        self,
        input_ids: torch.Tensor,
        images=None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        doc_ids: torch.Tensor | None = None,
        **kwargs,
    ):
        """The decoder's output (loss when `labels` are given, logits) on text with images spliced in.

        `doc_ids` (a packed batch's document ids) builds the block-diagonal mask when no
        `attention_mask` is given.
        """
        embeds = self.embed(input_ids, images)
        if attention_mask is None and doc_ids is not None:
            attention_mask = document_mask(doc_ids)
        if labels is not None:
            labels = labels.masked_fill(input_ids == self.image_token_id, IGNORE)
        return self.decoder(inputs_embeds=embeds, attention_mask=attention_mask, position_ids=position_ids,
                            labels=labels, **kwargs)

    @torch.no_grad()
    def generate(
        self,
        prompts: list[list[int]],
        images: list[list[torch.Tensor]] | None = None,
        max_new_tokens: int = 32,
        stop_token_ids: list[int] | None = None,
        pad_token_id: int = 0,
    ) -> list[list[int]]:
        """Greedy completions (HF `generate` on inputs_embeds, prompts left-padded).

        `images[i]` are prompt i's images in order. A completion ends with its stop token when it stopped.
        """
        if not prompts or any(len(p) == 0 for p in prompts):
            raise ValueError("every prompt needs at least one token")
        width = max(len(p) for p in prompts)
        ids = torch.full((len(prompts), width), pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(prompts), width), dtype=torch.long)
        for r, p in enumerate(prompts):
            ids[r, width - len(p):] = torch.tensor(p)
            mask[r, width - len(p):] = 1
        device = self.get_input_embeddings().weight.device
        flat = [img for per_prompt in (images or []) for img in as_image_list(per_prompt)]
        embeds = self.embed(ids.to(device), [img.to(device) for img in flat])
        stops = _stop_ids(stop_token_ids, self.decoder)
        out = self.decoder.generate(
            inputs_embeds=embeds, attention_mask=mask.to(device), max_new_tokens=max_new_tokens, do_sample=False,
            eos_token_id=stops or None, pad_token_id=pad_token_id, temperature=None, top_p=None, top_k=None,
        )
        completions = []
        for row in out.tolist():
            for j, t in enumerate(row):
                if t in stops:
                    row = row[: j + 1]
                    break
            completions.append(row)
        return completions


def _stop_ids(stop_token_ids: list[int] | None, model: PreTrainedModel) -> list[int]:
    """The given stop ids, else the model's generation config's eos ids (what HF generate stops at)."""
    return list(stop_token_ids) if stop_token_ids is not None else generation_eos(model)


# ---------------------------------------------------------------------------------------------------
# Placeholders


ImageLayout = int | Sequence[int]  # an image's token ids (image_tokens), or the length of its one flat run


def image_rows(image_token_id: int, break_id: int, end_id: int, rows: int, cols: int) -> list[int]:
    """Pixtral's layout of an image of rows x cols image tokens: each row of `cols` image tokens is
    followed by the row break, except the last, which is followed by the image end."""
    if rows < 1 or cols < 1:
        raise DataError(f"an image of {rows} x {cols} image tokens has no tokens")
    ids = ([image_token_id] * cols + [break_id]) * rows
    ids[-1] = end_id
    return ids


def _shape(layout: ImageLayout, image_token_id: int) -> tuple[list[int], list[int] | None]:
    """(the lengths of the image's runs of image tokens, its ids when they hold other tokens too, else None)."""
    if isinstance(layout, int):
        return [layout], None
    layout = list(layout)
    if all(t == image_token_id for t in layout):
        return [len(layout)], None
    if layout[0] != image_token_id:
        raise ValueError("an image's token ids must start with the image token")
    return [sum(1 for _ in group) for token, group in itertools.groupby(layout) if token == image_token_id], layout


def check_placeholders(input_ids: torch.Tensor, image_token_id: int, images: Sequence[ImageLayout]) -> None:
    """Raise a DataError unless the image tokens of `input_ids` are exactly the images' layouts, in order.

    `images[i]` is image i's token ids (its model's `image_tokens`) or, for one flat run, its count.
    Runs never cross rows. A flat image is one run, and adjacent flat images form one run of their
    summed counts; an image in rows (Pixtral) is one run per row, and its whole token list (row
    breaks, image end) must stand in the input as written.
    """
    shapes = [_shape(layout, image_token_id) for layout in images]
    counts = [sum(runs) for runs, _ in shapes]
    mask = input_ids == image_token_id
    total = int(mask.sum())
    if total != sum(counts):
        sizes = ", ".join(str(c) for c in counts[:8]) + (", ..." if len(counts) > 8 else "")
        raise DataError(
            f"image placeholders and image features do not match: {total} '<image>' placeholder tokens in the "
            f"input but {len(counts)} images give {sum(counts)} image tokens ({sizes or 'none'})"
        )
    if not total:
        return
    rows = input_ids.reshape(-1, input_ids.shape[-1])
    m = F.pad(mask.reshape(-1, mask.shape[-1]).to(torch.int8), (1, 1))
    edges = m[:, 1:] - m[:, :-1]
    starts, ends = (edges == 1).nonzero().tolist(), (edges == -1).nonzero().tolist()
    image, piece = 0, 0  # the next run expected: run `piece` of image `image`

    def mismatch(run: int, row: int, col: int, last: int) -> DataError:
        runs, ids = shapes[last]
        how = "" if ids is None else f" in {len(runs)} rows of {runs[0]}, each row a run of its own"
        return DataError(
            f"image placeholders and image features do not match: a run of {run} '<image>' tokens at row {row}, "
            f"column {col} does not split into whole images (image {last} has {counts[last]} tokens{how})"
        )

    for (row, col), (_, end) in zip(starts, ends):
        run = end - col
        runs, ids = shapes[image]
        if piece == 0 and ids is not None and rows[row, col : col + len(ids)].tolist() != ids:
            raise DataError(
                f"image placeholders and image features do not match: image {image} at row {row}, column {col} is not "
                f"written as its {len(runs)} rows of {runs[0]} image tokens, each row ended by a row break and the "
                f"last by an image end"
            )
        filled, last = runs[piece], image
        piece += 1
        if piece == len(runs):
            image, piece = image + 1, 0
        while filled < run and ids is None and image < len(shapes) and shapes[image][1] is None:
            filled, last, image = filled + counts[image], image, image + 1  # adjacent flat images share a run
        if filled != run:
            raise mismatch(run, row, col, last)


def expand_placeholders(ids: list[int], image_token_id: int, images: Sequence[ImageLayout]) -> list[int]:
    """Token ids with one placeholder per image -> ids with image i's token ids (`images[i]`: its model's
    `image_tokens`, or a count: a flat run of that many placeholders) in place of its placeholder."""
    found = sum(1 for t in ids if t == image_token_id)
    if found != len(images):
        raise DataError(f"the text has {found} '<image>' placeholders but {len(images)} images were given")
    out, image = [], 0
    for t in ids:
        if t == image_token_id:
            layout = images[image]
            out.extend([image_token_id] * layout if isinstance(layout, int) else layout)
            image += 1
        else:
            out.append(t)
    return out


# ---------------------------------------------------------------------------------------------------
# Building, freezing


def image_token_id_of(tok: PreTrainedTokenizerBase, image_token: str = IMAGE_TOKEN) -> int:
    token_id = tok.convert_tokens_to_ids(image_token)
    if token_id is None or token_id == tok.unk_token_id:
        raise ConfigError(f"the tokenizer has no image placeholder token {image_token!r}; add it as a special token")
    return token_id


def build_vlm(
    model_cfg: ModelConfig,
    tok: PreTrainedTokenizerBase,
    vision: VisionConfig | None = None,
    projector: ProjectorConfig | None = None,
    decoder: PreTrainedModel | None = None,
    image_token: str = IMAGE_TOKEN,
) -> VisionLanguageModel:
    """A new tower and projector on `decoder` (e.g. the language-only stage's model), or on a new decoder."""
    vision = vision or VisionConfig()
    projector = projector or ProjectorConfig()
    decoder = decoder if decoder is not None else build_decoder(model_cfg, tok)
    return _assemble(decoder, vision, projector, image_token_id_of(tok, image_token), _readout_ids(projector, tok))


def _readout_ids(projector: ProjectorConfig, tok: PreTrainedTokenizerBase) -> list[int] | None:
    if projector.kind != "embedding_softmax":
        return None
    if projector.readout_tokens is None:
        return default_readout_ids(tok)
    ids = [_readout_id(tok, t) for t in projector.readout_tokens]
    unknown = [t for t, i in zip(projector.readout_tokens, ids) if i is None]
    if unknown:
        raise ConfigError(f"projector readout tokens not in the tokenizer: {unknown}")
    return ids


def _readout_id(tok: PreTrainedTokenizerBase, token: str) -> int | None:
    """A token string ("<answer>"), else a character: byte-level vocabularies spell some apart (" " is "Ġ")."""
    token_id = tok.convert_tokens_to_ids(token)
    if token_id is not None and token_id != tok.unk_token_id:
        return token_id
    return char_token_ids(tok, token)[0] if len(token) == 1 else None


def _assemble(decoder, vision: VisionConfig, projector: ProjectorConfig, image_token_id: int,
              readout_ids: list[int] | None) -> VisionLanguageModel:
    tower = VisionTower(vision)
    text_hidden = decoder.config.hidden_size
    proj = Projector(projector, vision.hidden_size, text_hidden, decoder.config.rms_norm_eps, readout_ids)
    dtype = decoder.get_input_embeddings().weight.dtype
    return VisionLanguageModel(decoder, tower.to(dtype), proj.to(dtype), image_token_id)


def freeze(vlm: nn.Module, parts: tuple[str, ...] | list[str] = ("decoder",)) -> dict[str, int]:
    """Freeze exactly `parts` (of tower, projector, decoder) and make the other parts trainable.

    `freeze(vlm, ("decoder",))` is the tower-only stage; `freeze(vlm, ())` trains everything.
    Returns the number of trainable parameters per part.
    """
    unknown = sorted(set(parts) - set(PARTS))
    if unknown:
        raise ValueError(f"unknown model parts {unknown}; parts are {', '.join(PARTS)}")
    trainable = {}
    for part in PARTS:
        module = getattr(vlm, part)
        for p in module.parameters():
            p.requires_grad_(part not in parts)
        trainable[part] = sum(p.numel() for p in module.parameters() if p.requires_grad)
    return trainable


# ---------------------------------------------------------------------------------------------------
# Saving and loading


def _hf_key_map() -> list[tuple[str, str]]:
    """(our prefix, transformers prefix), most specific first."""
    return [
        ("decoder.model.", "model.language_model."),
        ("decoder.lm_head.", "lm_head."),
        ("tower.patch_embed.", "model.vision_tower.patch_conv."),
        ("tower.layers.", "model.vision_tower.transformer.layers."),
        ("tower.", "model.vision_tower."),
        ("projector.", "model.multi_modal_projector."),
    ]


def _rename(state: dict[str, torch.Tensor], to_hf: bool) -> dict[str, torch.Tensor]:
    out = {}
    for key, value in state.items():
        for ours, theirs in _hf_key_map():
            src, dst = (ours, theirs) if to_hf else (theirs, ours)
            if key.startswith(src):
                out[dst + key[len(src):]] = value
                break
        else:
            raise CheckpointError(f"no mapping for weight {key!r}")
    return out


def hf_format(vlm: VisionLanguageModel) -> str | None:
    """The transformers class family this model saves as: 'llava', 'mistral3', or None (k15 layout)."""
    if vlm.projector.cfg.kind != "mlp":
        return None
    return "llava" if vlm.merge == 1 else "mistral3"


def to_transformers(vlm: VisionLanguageModel) -> PreTrainedModel:
    """A transformers model (LlavaForConditionalGeneration / Mistral3ForConditionalGeneration) with our weights."""
    from transformers import (LlavaConfig, LlavaForConditionalGeneration, Mistral3Config,
                              Mistral3ForConditionalGeneration, PixtralVisionConfig)

    fmt = hf_format(vlm)
    if fmt is None:
        raise CheckpointError("an embedding_softmax projector has no transformers counterpart; save with save_vlm")
    v, p = vlm.tower.cfg, vlm.projector.cfg
    vision_config = PixtralVisionConfig(
        hidden_size=v.hidden_size, intermediate_size=v.intermediate_size, num_hidden_layers=v.num_layers,
        num_attention_heads=v.num_heads, num_channels=v.num_channels, image_size=v.max_side,
        patch_size=v.patch_size, hidden_act=v.hidden_act,
        rope_parameters={"rope_type": "axial", "rope_theta": v.rope_theta},
    )
    text_config = vlm.decoder.config
    common = dict(
        vision_config=vision_config, text_config=text_config, image_token_index=vlm.image_token_id,
        projector_hidden_act=p.hidden_act, multimodal_projector_bias=p.bias, vision_feature_layer=-1,
        tie_word_embeddings=bool(text_config.tie_word_embeddings),
    )
    if fmt == "llava":
        config = LlavaConfig(**common, vision_feature_select_strategy="full")
        cls = LlavaForConditionalGeneration
    else:
        config = Mistral3Config(**common, spatial_merge_size=p.merge)
        cls = Mistral3ForConditionalGeneration
    config._attn_implementation = text_config._attn_implementation
    dtype = vlm.get_input_embeddings().weight.dtype
    model = cls(config).to(dtype)
    state = _rename(vlm.state_dict(), to_hf=True)
    conv = state["model.vision_tower.patch_conv.weight"]
    state["model.vision_tower.patch_conv.weight"] = conv.reshape(-1, v.num_channels, v.patch_size, v.patch_size)
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise CheckpointError(f"weights do not map onto {cls.__name__}: "
                              f"missing {missing[:4]}, unexpected {unexpected[:4]}")
    model.generation_config = vlm.decoder.generation_config
    return model.eval()


def save_vlm(vlm: VisionLanguageModel, tok: PreTrainedTokenizerBase, path: str | Path) -> Path:
    """Save model + tokenizer: a transformers LLaVA / Mistral3 directory when possible, else k15's layout."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    fmt = hf_format(vlm)
    if fmt is not None:
        to_transformers(vlm).save_pretrained(str(path))
    else:
        vlm.decoder.save_pretrained(str(path / "decoder"))
        own = {k: v.contiguous() for k, v in vlm.state_dict().items() if not k.startswith("decoder.")}
        save_file(own, str(path / "vision.safetensors"))
    tok.save_pretrained(str(path))
    meta = {
        "format": fmt or "k15",
        "vision": asdict(vlm.tower.cfg),
        "projector": asdict(vlm.projector.cfg),
        "image_token_id": vlm.image_token_id,
        "readout_ids": vlm.projector.readout_ids.tolist() if hasattr(vlm.projector, "readout_ids") else None,
    }
    (path / SIDE_CAR).write_text(json.dumps(meta, indent=2) + "\n")
    return path


def is_vlm_dir(path: str | Path) -> bool:
    return (Path(path) / SIDE_CAR).is_file()


def load_vlm(path: str | Path, attn_implementation: str = "sdpa", key: str = "model.init_from"
             ) -> tuple[VisionLanguageModel, PreTrainedTokenizerBase]:
    """A VLM saved by `save_vlm` (either layout), with its tokenizer. `key` names the setting that gave
    `path`, for the one-line error when a part of the directory is missing."""
    path = Path(path)
    if not is_vlm_dir(path):
        raise CheckpointError(f"not a k15 VLM directory (no {SIDE_CAR}): {path}; "
                              "for other transformers VLMs use k15.models.hf_vlm.load_hf_vlm")
    check_model_dir(path, key)
    meta = json.loads((path / SIDE_CAR).read_text())
    try:
        vision, projector = VisionConfig(**meta["vision"]), ProjectorConfig(**meta["projector"])
    except TypeError as exc:
        raise CheckpointError(f"{path / SIDE_CAR}: {exc}") from None
    tok = load_tokenizer(path, key)
    if meta["format"] == "k15":
        decoder = load_decoder(path / "decoder", attn_implementation, key)
        vlm = _assemble(decoder, vision, projector, meta["image_token_id"], meta["readout_ids"])
        own = load_file(str(path / "vision.safetensors"))
        missing, unexpected = vlm.load_state_dict(own, strict=False)
        missing = [k for k in missing if not k.startswith("decoder.")]
        if missing or unexpected:
            raise CheckpointError(f"{path / 'vision.safetensors'}: missing {missing[:4]}, unexpected {unexpected[:4]}")
        return vlm.eval(), tok
    from transformers import AutoModelForCausalLM, AutoModelForImageTextToText

    try:
        hf = AutoModelForImageTextToText.from_pretrained(str(path), local_files_only=True, dtype=torch.float32)
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"cannot load a model from {path}: {str(exc).splitlines()[0]}") from None
    text_config = hf.config.text_config
    text_config._attn_implementation = attn_implementation
    decoder = AutoModelForCausalLM.from_config(text_config, dtype=torch.float32)
    vlm = _assemble(decoder, vision, projector, meta["image_token_id"], None)
    state = _rename(hf.state_dict(), to_hf=False)
    state["tower.patch_embed.weight"] = state["tower.patch_embed.weight"].reshape(vision.hidden_size, -1)
    vlm.load_state_dict(state, strict=True)
    vlm.decoder.generation_config = hf.generation_config
    return vlm.eval(), tok
