"""Rollouts with image prompts: a VLM (k15's, or an hf_vlm wrapper) through the RolloutEngine.

    engine = VisionRolloutEngine(vlm, max_batch_size=64, max_seq_len=256)
    out = engine.generate([ImagePrompt(ids, [pil_or_pixels, ...]), ...], SamplingParams(...), generator)
    out.tokens, out.logprobs, out.finish_reasons                  # a RolloutOutput, as for text
    engine.load_weights(vlm)                                      # after an optimizer step

An `ImagePrompt` holds token ids with one `<image>` placeholder per image (expanded here to the
model's `image_tokens`: a run of `tokens_per_image` placeholders as the model was trained, or a
Pixtral checkpoint's rows with their [IMG_BREAK] / [IMG_END]) or, with `expanded=True`, ids whose
placeholders are already expanded (a continued partial rollout re-sends its expanded prompt).
Images are Pillow images (run through the model's ImageProcessor) or pixel tensors [C, H, W].

How: the decoder runs in the engine unchanged. Only the prefill differs: after the engine has
looked up the token embeddings of a chunk of left-padded prompts, the image features (tower +
projector) replace the rows at the placeholder positions -- exactly what `VisionLanguageModel.embed`
does for a forward pass. They are computed once per `generate` call: for k15's VLM every distinct
image at once, batched by size; for an hf_vlm wrapper once per distinct set of images (see Models). The
sampler, stop tokens, limits, repeat rule and T=1 log-probs are the engine's own, with one change:
the `<image>` token is never sampled (its logit is -inf). A placeholder in a response would have no
image behind it, so the trainer's forward on prompt + response would fail; the returned log-probs
are therefore under the distribution without it, and a loss that recomputes them should mask the
same logit (for a trained model its probability is ~0 anyway: it is never a training target).

Weights: the decoder is the engine's fused copy (synced by `load_weights`, as for text); the tower
and projector are read live from the VLM at each `generate` (they are small, and an
embedding_softmax projector mixes the live decoder embedding rows). So after a training step call
`load_weights` before generating, as RLModule does every iteration.

Models: k15's VisionLanguageModel, and k15.models.hf_vlm wrappers of LLaVA, Mistral3, Qwen2-VL and
Qwen2.5-VL checkpoints whose language model is Llama/Qwen2-shaped (the engine's decoder). For those,
the prompt embeddings are the checkpoint's own: its forward runs up to its language model, where a
hook takes the spliced `inputs_embeds` and stops it. That runs once per distinct set of image objects
in a `generate` call (the features at the placeholders do not depend on the text), so the k samples of
a prompt and its continued partial rollouts share one run; the other rows take only the rope index.

M-RoPE (Qwen2-VL / Qwen2.5-VL): their decoder rotates by 3D positions (t, h, w).
1. Prefill: the same hook takes the checkpoint's own `position_ids` [3, 1, T] (its rope index of
   the unpadded prompt). Frequency j of head_dim/2 belongs to one axis (`mrope_section`: the first
   s0 frequencies to t, the next s1 to h, the rest to w), so its rotation is the engine's 1D table
   row at that axis' position: the token's rotations are gathered from three table rows. Left
   padding only shifts the columns.
2. Decode: generated tokens are text, whose three positions are equal, so the 1D table applies;
   a row continues at max(its prompt positions) + 1 (not at its length: an image of h x w tokens
   advances the positions by max(h, w) only).
3. A continued prompt (prompt + earlier tokens, same images) gets the same rope index, so a partial
   rollout sees exactly the positions of one uninterrupted generation. Text-only rows keep 1D positions.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from PIL import Image

from k15.errors import ConfigError, DataError
from k15.models.hf_vlm import HFVisionLanguageModel
from k15.models.vlm import VisionLanguageModel, check_placeholders, expand_placeholders
from k15.rollout.engine import RolloutEngine, RolloutOutput
from k15.rollout.sampling import SamplingParams

__all__ = ["ImagePrompt", "VisionRolloutEngine", "RolloutOutput", "SamplingParams"]

MROPE_FAMILIES = ("qwen2_vl", "qwen2_5_vl")  # hf_vlm families whose decoder rotates by (t, h, w) positions


@dataclass
class ImagePrompt:
    ids: list[int]  # token ids; one `<image>` per image unless `expanded`
    images: list[Image.Image | torch.Tensor] = field(default_factory=list)  # in reading order
    expanded: bool = False  # ids already hold each image's image_tokens

    def __add__(self, tokens: list[int]) -> ImagePrompt:
        """The prompt continued by generated tokens (a partial rollout's next segment starts here)."""
        return ImagePrompt(list(self.ids) + list(tokens), self.images, self.expanded)

    def __len__(self) -> int:
        return len(self.ids)


class _Row(list):
    """Expanded prompt ids that carry their image features [placeholders, hidden] through the engine.

    The engine sorts and chunks the prompt lists it is given but passes the same list objects to
    `_generate_chunk`, so features attached to the list arrive with their own row, whatever the order.
    """

    features: torch.Tensor | None = None
    positions: torch.Tensor | None = None  # [3, len] M-RoPE (t, h, w) positions; None: 1D positions


class _HFText:
    """The causal-LM face the engine reads (`.model`, `.config`, output embeddings) of a HF VLM's text half."""

    def __init__(self, hf: HFVisionLanguageModel):
        self.model = hf.model.model.language_model
        self.config = hf.config  # the text config
        self._head = hf.model.lm_head

    def get_output_embeddings(self) -> torch.nn.Module:
        return self._head


class _Captured(Exception):
    """Raised by the hook once the HF model's spliced input embeddings are in hand."""


def _mrope_axes(config, head_dim: int) -> torch.Tensor:
    """[head_dim // 2] long: which of (t, h, w) each rotary frequency reads its position from."""
    section = (config.rope_parameters or {}).get("mrope_section", [16, 24, 24])  # HF's default when unset
    if sum(section) != head_dim // 2:
        raise ConfigError(f"mrope_section {section} does not cover the {head_dim // 2} rotary frequencies")
    # HF splits the frequencies by section and gives chunk i the positions of axis i % 3.
    return torch.cat([torch.full((s,), i % 3, dtype=torch.long) for i, s in enumerate(section)])


def _text_model(vlm) -> object:
    if isinstance(vlm, VisionLanguageModel):
        return vlm.decoder
    if isinstance(vlm, HFVisionLanguageModel):
        return _HFText(vlm)
    raise TypeError(f"VisionRolloutEngine needs a k15 VisionLanguageModel or HFVisionLanguageModel, "
                    f"got {type(vlm).__name__}")


class VisionRolloutEngine(RolloutEngine):
    """RolloutEngine whose prompts may carry images (k15's VLM, or an hf_vlm wrapper)."""

    def __init__(self, vlm: VisionLanguageModel | HFVisionLanguageModel, max_batch_size: int, max_seq_len: int):
        text = _text_model(vlm)
        self.vlm = vlm
        self.image_token_id = vlm.image_token_id
        self._chunk: list[_Row] | None = None
        super().__init__(text, max_batch_size, max_seq_len)
        self._mrope_axes = None  # set for M-RoPE decoders
        if isinstance(vlm, HFVisionLanguageModel) and vlm.family in MROPE_FAMILIES:
            self._mrope_axes = _mrope_axes(text.config, self.arch.head_dim).to(self.device)

    def load_weights(self, model) -> float:
        """Sync the decoder weights (pass the VLM, or its text model); the tower is always read live."""
        if isinstance(model, (VisionLanguageModel, HFVisionLanguageModel)):
            self.vlm = model
            model = _text_model(model)
        return super().load_weights(model)

    # ------------------------------------------------------------------ prompts

    def prepare(self, prompts: Sequence[ImagePrompt | list[int]]) -> list[_Row]:
        """Expanded ids with their image features attached; raises DataError on a placeholder mismatch."""
        prompts = list(prompts)  # held for the whole call: the identity-keyed caches below rely on it
        processor = None
        processed: dict[int, torch.Tensor] = {}  # id of a Pillow image -> its pixels (k samples share one image)
        rows: list[_Row] = []
        pixels: list[torch.Tensor] = []
        owners: list[int] = []  # prompt index of every image in `pixels`
        image_keys: list[tuple[int, ...]] = []  # per prompt: the identities of its image objects
        for i, prompt in enumerate(prompts):
            if not isinstance(prompt, ImagePrompt):  # plain token ids: a text-only prompt
                prompt = ImagePrompt(list(prompt), [], expanded=True)
            images = []
            for img in prompt.images:
                if isinstance(img, Image.Image):
                    if id(img) not in processed:
                        processor = processor or self.vlm.image_processor()
                        processed[id(img)] = processor(img)
                    img = processed[id(img)]
                images.append(img)
            image_keys.append(tuple(id(img) for img in prompt.images))
            layouts = [self.vlm.image_tokens(img.shape[-2], img.shape[-1]) for img in images]
            try:
                if prompt.expanded:
                    ids = list(prompt.ids)
                    check_placeholders(torch.tensor([ids], dtype=torch.long), self.image_token_id, layouts)
                else:
                    ids = expand_placeholders(list(prompt.ids), self.image_token_id, layouts)
            except DataError as exc:
                raise DataError(f"prompt {i}: {exc}") from None
            rows.append(_Row(ids))
            pixels += images
            owners += [i] * len(images)
        if not pixels:
            return rows
        device = self.vlm.get_input_embeddings().weight.device
        original, pixels = pixels, [p.to(device) for p in pixels]
        if isinstance(self.vlm, HFVisionLanguageModel):
            # One tower run per distinct set of image objects: the k samples of a prompt and its continued
            # partial rollouts (other ids, the same images) share it; the features at the placeholders do
            # not depend on the text. Each row's M-RoPE positions come from the model's rope index (cheap).
            # `prompts` holds every image for the whole call, so the identities stay unique.
            encoded: dict[tuple, torch.Tensor] = {}
            for i, row in enumerate(rows):
                mine = [p for p, o in zip(pixels, owners) if o == i]
                if not mine:
                    continue
                if image_keys[i] in encoded:
                    row.features, row.positions = encoded[image_keys[i]], self._rope_index(row, mine)
                else:
                    row.features, row.positions = self._hf_features(row, mine)
                    encoded[image_keys[i]] = row.features
            return rows
        slot: dict[int, int] = {}  # the k samples of a prompt share its pixel tensors: encode each once
        distinct = []
        for p in original:
            if id(p) not in slot:
                slot[id(p)] = len(distinct)
                distinct.append(p.to(device))
        with torch.no_grad():  # our tower: every distinct image of every prompt at once, grouped by size
            encoded = self.vlm.encode_images(distinct)
        features = [encoded[slot[id(p)]] for p in original]
        for i, row in enumerate(rows):
            mine = [f for f, o in zip(features, owners) if o == i]
            if mine:
                row.features = torch.cat(mine).to(device=self.device, dtype=self.dtype)
        return rows

    def _hf_features(self, ids: list[int], pixels: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The HF model's own embeddings at the placeholders of one prompt (its splicing, its projector)
        and, for an M-RoPE decoder, its 3D positions [3, len(ids)]."""
        hf = self.vlm
        inner = hf.model.model
        input_ids = torch.tensor([ids], dtype=torch.long, device=pixels[0].device)
        captured: dict[str, torch.Tensor] = {}

        def grab(module, args, kwargs):
            captured["embeds"] = kwargs["inputs_embeds"]
            captured["positions"] = kwargs.get("position_ids")
            raise _Captured  # the decoder pass itself is the engine's job

        deltas = getattr(inner, "rope_deltas", None)
        handle = inner.language_model.register_forward_pre_hook(grab, with_kwargs=True)
        try:
            with torch.no_grad():
                inner(**{k: v for k, v in hf.model_inputs(input_ids, pixels).items() if v is not None})
        except _Captured:
            pass
        finally:
            handle.remove()
            if hasattr(inner, "rope_deltas"):  # Qwen keeps its last rope deltas for its own generate: leave them
                inner.rope_deltas = deltas
        if "embeds" not in captured:
            raise RuntimeError(f"{type(hf.model).__name__} never called its language model with inputs_embeds")
        features = captured["embeds"][0][input_ids[0] == self.image_token_id]
        features = features.to(device=self.device, dtype=self.dtype)
        if self._mrope_axes is None:
            return features, None
        positions = captured["positions"]
        if positions is None or tuple(positions.shape) != (3, 1, len(ids)):
            got = None if positions is None else tuple(positions.shape)
            raise RuntimeError(f"{type(hf.model).__name__} gave its language model position_ids of shape {got}, "
                               f"expected (3, 1, {len(ids)})")
        return features, positions[:, 0].to(self.device)

    def _rope_index(self, ids: list[int], pixels: list[torch.Tensor]) -> torch.Tensor | None:
        """The model's own 3D positions [3, len(ids)] of a prompt whose image features are already known."""
        if self._mrope_axes is None:
            return None
        input_ids = torch.tensor([ids], dtype=torch.long, device=pixels[0].device)
        inputs = self.vlm.model_inputs(input_ids, pixels)
        positions, _ = self.vlm.model.model.get_rope_index(
            input_ids, mm_token_type_ids=inputs["mm_token_type_ids"], image_grid_thw=inputs["image_grid_thw"])
        return positions[:, 0].to(self.device)

    # ------------------------------------------------------------------ generation

    @torch.no_grad()
    def generate(
        self,
        prompts: Sequence[ImagePrompt | list[int]],
        params: SamplingParams,
        generator: torch.Generator | None = None,
        *,
        limits: Sequence[int] | None = None,
        history: Sequence[int] | None = None,
    ) -> RolloutOutput:
        """RolloutEngine.generate on prompts with images; plain id lists are text-only prompts.

        `history` counts tokens at the end of the *expanded* prompt (generated text, never images).
        """
        return super().generate(self.prepare(prompts), params, generator, limits=limits, history=history)

    def _generate_chunk(self, prompts, *args, **kwargs) -> RolloutOutput:
        self._chunk = prompts  # the rows _prefill is about to see, in its row order
        try:
            return super()._generate_chunk(prompts, *args, **kwargs)
        finally:
            self._chunk = None

    def _logits(self, hidden: torch.Tensor) -> torch.Tensor:
        logits = super()._logits(hidden)
        logits[..., self.image_token_id] = -torch.inf  # see the module docstring
        return logits

    def _prefill(self, embeds: torch.Tensor, pad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Splice each row's image features over its placeholder embeddings, then the engine's prefill."""
        for r, row in enumerate(self._chunk or ()):
            features = getattr(row, "features", None)
            if features is None:
                continue
            ids = torch.tensor(row, dtype=torch.long, device=self.device)
            cols = (ids == self.image_token_id).nonzero().squeeze(1) + pad[r]  # left padding shifts columns
            embeds[r, cols] = features
        return super()._prefill(embeds, pad)

    def _prefill_rope(self, pad: torch.Tensor, P: int) -> torch.Tensor:
        """The engine's 1D rotations, with M-RoPE rows' own 3D rotations over their unpadded columns."""
        rope = super()._prefill_rope(pad, P)
        for r, row in enumerate(self._chunk or ()):
            if getattr(row, "positions", None) is not None:
                rope[r, int(pad[r]) :, 0] = self._mrope(row.positions)
        return rope

    def _mrope(self, positions: torch.Tensor) -> torch.Tensor:
        """[3, L] (t, h, w) positions -> [L, head_dim/2] rotations: frequency j at its own axis' position."""
        by_axis = self.rope[positions]  # [3, L, head_dim/2]: every frequency at each axis' position
        axes = self._mrope_axes.view(1, 1, -1).expand(1, positions.shape[1], -1)
        return by_axis.gather(0, axes)[0]

    def _decode_start(self, prompts: list[_Row]) -> torch.Tensor:
        """Text continues one past the prompt's largest M-RoPE position (its length for 1D rows)."""
        start = super()._decode_start(prompts)
        for r, row in enumerate(prompts):
            if getattr(row, "positions", None) is not None:
                start[r] = int(row.positions.max()) + 1
        return start
