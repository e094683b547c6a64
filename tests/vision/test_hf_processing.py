"""A real-architecture VLM checkpoint's own image processing through k15.models.hf_vlm: our route (the
checkpoint's image processor + tokenizer, placeholders expanded by us) gives exactly the pixels,
grids and ids of transformers' processors; tools/make_tiny_vlm_checkpoint.py writes checkpoints that
load like a researcher's download."""

from __future__ import annotations

import io
import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import (AutoImageProcessor, AutoModelForImageTextToText, AutoProcessor, AutoTokenizer,
                          CLIPImageProcessorPil, PixtralImageProcessorPil)

from k15.chat import chat_format_of
from k15.config import DataConfig
from k15.data.prompts import EmbeddedImage, PromptRecord
from k15.data.vision_prompts import image_prompt
from k15.errors import CheckpointError
from k15.models.hf_vlm import CheckpointImageProcessor, load_hf_vlm
from k15.models.vision import ImageProcessor
from k15.models.vlm import save_vlm
from tools.make_tiny_vlm_checkpoint import FAMILIES, PIXTRAL_FAMILIES, main, make_tiny_vlm_checkpoint

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py

# (height, width): inside the limits, below min_pixels (Qwen grows it), above max_pixels (shrunk),
# sides off the 16-px grid, extreme aspect ratios; CLIP crops every one to 32x32; Pixtral shrinks into
# 64 px and rounds the sides up to patch x merge.
SIZES = [(32, 48), (16, 16), (10, 90), (64, 64), (100, 37), (300, 200), (33, 64), (200, 8)]
MESSAGES = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is 2+3?"},
                                         {"type": "image"}, {"type": "text", "text": "And here?"}]}]


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """One tiny checkpoint per family, built once for the module."""
    root = tmp_path_factory.mktemp("tiny_vlm")
    return {family: make_tiny_vlm_checkpoint(root / family, family) for family in FAMILIES}


def picture(height: int, width: int, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


def png_bytes(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.save(out, format="PNG")  # lossless: decodes to the same pixels
    return out.getvalue()


# what PixtralProcessor's image half gets: sides in multiples of the tower's patch x the merge
UNITS = {"mistral3": {"height": 16, "width": 16}, "llava_pixtral": {"height": 8, "width": 8}}
IMAGE_TOKENS = {"llava": "<image>", "mistral3": "[IMG]", "llava_pixtral": "[IMG]"}


def processor_image_tokens(family: str, processed) -> list[int]:
    """Image tokens per image as transformers' processors count them (Qwen: grid // merge**2;
    LLaVA: patches of the cropped image + CLS - CLS for the "default" feature selection; Pixtral:
    image_sizes // (patch x merge))."""
    if family in PIXTRAL_FAMILIES:
        unit = UNITS[family]["height"]
        return [(h // unit) * (w // unit) for h, w in processed["image_sizes"].tolist()]
    if family == "llava":
        h, w = processed["pixel_values"].shape[-2:]
        return [(h // 8) * (w // 8)] * processed["pixel_values"].shape[0]
    return [int(g.prod()) // 2**2 for g in processed["image_grid_thw"]]


# ------------------------------------------------------------------------------------------------
# Our route == the checkpoint's image processor


@pytest.mark.parametrize("family", FAMILIES)
def test_our_pixels_are_the_image_processors(checkpoints, family):
    model = load_hf_vlm(checkpoints[family])
    reference = AutoImageProcessor.from_pretrained(checkpoints[family])
    processor = model.image_processor()
    assert isinstance(processor, CheckpointImageProcessor)
    assert type(model.hf_image_processor).__name__ == type(reference).__name__
    assert (model.mean, model.std) == (tuple(reference.image_mean), tuple(reference.image_std))  # to show pixels
    for i, (h, w) in enumerate(SIZES):
        image = picture(h, w, seed=i)
        expected = reference(images=[image], return_tensors="pt", **({"patch_size": UNITS[family]}
                                                                    if family in UNITS else {}))
        pixels = processor(image)
        assert tuple(pixels.shape[-2:]) == processor.size_for(h, w)  # counted without decoding pixels
        n = model.tokens_per_image(*pixels.shape[-2:])
        assert [n] == processor_image_tokens(family, expected)
        inputs = model.model_inputs(torch.tensor([model.image_tokens(*pixels.shape[-2:])]), [pixels])
        assert torch.equal(inputs["pixel_values"], expected["pixel_values"]), (h, w)
        if family in PIXTRAL_FAMILIES:
            assert torch.equal(inputs["image_sizes"], expected["image_sizes"]), (h, w)
        elif family != "llava":
            assert torch.equal(inputs["image_grid_thw"], expected["image_grid_thw"]), (h, w)
            assert inputs["mm_token_type_ids"].sum() == n


def test_qwen_min_and_max_pixels_come_from_the_checkpoint(checkpoints):
    processor = load_hf_vlm(checkpoints["qwen2_5_vl"]).image_processor()
    assert processor.size_for(16, 16) == (32, 32)  # grown to min_pixels = 32*32
    assert processor.size_for(300, 200) == (64, 48)  # shrunk under max_pixels = 64*64
    assert processor.size_for(48, 64) == (48, 64)  # already fits: kept
    for h, w in [(17, 200), (1000, 999), (5, 5), (63, 65)]:
        out = processor.size_for(h, w)
        assert out[0] % 16 == 0 and out[1] % 16 == 0 and 32 * 32 <= out[0] * out[1] <= 64 * 64


@pytest.mark.parametrize("family", FAMILIES)
def test_both_routes_give_the_same_ids_and_pixels(checkpoints, family):
    """AutoProcessor(chat text, images) == our tokenizer + expand_prompt, where AutoProcessor builds."""
    path = checkpoints[family]
    try:
        reference = AutoProcessor.from_pretrained(path)
    except ImportError:
        if family == "llava":
            raise
        pytest.skip("transformers' Qwen2-VL processors (their video half) and PixtralProcessor need torchvision, "
                    "which does not import next to a CPU-only torch; our route needs only the image processor "
                    "(tests/vision/test_pixtral_rows.py writes Pixtral's rows out by hand)")
    model, tok = load_hf_vlm(path), AutoTokenizer.from_pretrained(path)
    images = [picture(20, 40, seed=1), picture(90, 70, seed=2)]
    text = tok.apply_chat_template(MESSAGES, add_generation_prompt=True, tokenize=False)
    # LLaVA: <s> added, as the processor does; Mistral's template writes <s> itself (its processor's
    # apply_chat_template then adds none)
    written = {"add_special_tokens": False} if tok.bos_token and text.startswith(tok.bos_token) else {}
    expected = reference(text=text, images=images, return_tensors="pt", **written)
    ids, pixels = model.expand_prompt(tok(text, **written).input_ids, images)
    assert ids == expected["input_ids"][0].tolist()
    assert ids.count(model.image_token_id) == sum(model.tokens_per_image(*p.shape[-2:]) for p in pixels)
    assert len(ids) - len(tok(text, **written).input_ids) == sum(len(model.image_tokens(*p.shape[-2:])) - 1
                                                                 for p in pixels)
    inputs = model.model_inputs(torch.tensor([ids]), pixels)
    assert torch.equal(inputs["pixel_values"], expected["pixel_values"])
    for key in ("image_grid_thw", "mm_token_type_ids"):
        if key in expected:
            assert torch.equal(inputs[key].long(), expected[key].long()), key
    # the pipeline's own route (a prompt record with <image> markers, the run's chat format) gives the same
    embedded = tuple(EmbeddedImage(png_bytes(img), f"picture{j}.png") for j, img in enumerate(images))
    record = PromptRecord("r", "<image>What is 2+3?<image>And here?", "5", None, "math", images=embedded)
    prompt = image_prompt(record, tok, model, chat_format_of(DataConfig(chat_template="model"), tok, model))
    assert prompt.ids == ids and all(torch.equal(a, b) for a, b in zip(prompt.images, pixels))


@pytest.mark.parametrize("merge", [1, 2])
def test_pixtral_towers_use_the_processors_longest_edge(tmp_path, make_vlm, tok, merge):
    """A LLaVA-Pixtral (merge 1) / Mistral3 (merge 2) export with a Pixtral image processor next to it:
    sides come out multiples of patch x merge, as PixtralProcessor asks its image processor for."""
    vlm = make_vlm(merge=merge)
    save_vlm(vlm, tok, tmp_path)
    patch = vlm.tower.cfg.patch_size
    PixtralImageProcessorPil(patch_size={"height": patch, "width": patch}, size={"longest_edge": 64},
                             image_mean=[0.5] * 3, image_std=[0.5] * 3).save_pretrained(tmp_path)
    model = load_hf_vlm(tmp_path)
    processor = model.image_processor()
    reference = PixtralImageProcessorPil.from_pretrained(tmp_path)
    unit = patch * merge
    for i, (h, w) in enumerate([(16, 112), (20, 50), (100, 37), (64, 64), (5, 300)]):
        image = picture(h, w, seed=i)
        expected = reference(images=[image], patch_size={"height": unit, "width": unit}, return_tensors="pt")
        pixels = processor(image)
        assert tuple(pixels.shape[-2:]) == processor.size_for(h, w) == tuple(expected["image_sizes"][0].tolist())
        assert pixels.shape[-2] % unit == 0 and pixels.shape[-1] % unit == 0 and max(pixels.shape[-2:]) <= 64
        n = model.tokens_per_image(*pixels.shape[-2:])
        inputs = model.model_inputs(torch.tensor([[model.image_token_id] * n]), [pixels])
        assert torch.equal(inputs["pixel_values"], expected["pixel_values"])
        assert torch.equal(inputs["image_sizes"], expected["image_sizes"])


@pytest.mark.parametrize("settings", [
    {"size": {"shortest_edge": 32}, "do_center_crop": False},  # CLIP without its crop: short side to 32
    {"size": {"height": 32, "width": 32}, "do_center_crop": False},  # SigLIP: one size
    {"size": {"max_height": 40, "max_width": 24}, "do_center_crop": False},  # a rule we measure instead
])
def test_size_for_agrees_with_fixed_size_processors(settings):
    processor = CheckpointImageProcessor(CLIPImageProcessorPil(**settings), "fixed", unit=8)
    for i, (h, w) in enumerate([(32, 48), (48, 32), (33, 33), (10, 90), (200, 8)]):
        assert processor.size_for(h, w) == tuple(processor(picture(h, w, seed=i)).shape[-2:]), (settings, h, w)


def test_grey_images_and_mismatched_processors(checkpoints, tmp_path):
    model = load_hf_vlm(checkpoints["qwen2_vl"])
    grey = picture(40, 24).convert("L")
    assert model.image_processor()(grey).shape == (3, *model.image_processor().size_for(40, 24))
    shutil.copytree(checkpoints["qwen2_vl"], tmp_path / "bad")
    config = json.loads((tmp_path / "bad" / "preprocessor_config.json").read_text())
    (tmp_path / "bad" / "preprocessor_config.json").write_text(json.dumps({**config, "patch_size": 14}))
    with pytest.raises(CheckpointError, match=r"patch / merge / temporal patch sizes \(14, 2, 2\) differ"):
        load_hf_vlm(tmp_path / "bad")


def test_without_preprocessor_config_k15s_own_processor(tmp_path, make_vlm, tok):
    save_vlm(make_vlm(), tok, tmp_path)  # a k15 export carries k15_vlm.json, no preprocessor_config.json
    model = load_hf_vlm(tmp_path)
    assert model.hf_image_processor is None and isinstance(model.image_processor(), ImageProcessor)


# ------------------------------------------------------------------------------------------------
# The tool's checkpoints


@pytest.mark.parametrize("family", FAMILIES)
def test_tool_checkpoint_loads_chats_and_generates(checkpoints, family):
    path = checkpoints[family]
    hf = AutoModelForImageTextToText.from_pretrained(path)
    tok = AutoTokenizer.from_pretrained(path)
    image_token = IMAGE_TOKENS.get(family, "<|image_pad|>")
    assert hf.config.image_token_id == tok.convert_tokens_to_ids(image_token)
    assert hf.get_input_embeddings().weight.shape[0] >= len(tok) and hf.dtype == torch.bfloat16
    text = tok.apply_chat_template(MESSAGES, add_generation_prompt=True, tokenize=False)
    if family in PIXTRAL_FAMILIES:
        assert text == "<s>[INST][IMG]What is 2+3?[IMG]And here?[/INST]"
        assert (tok.bos_token, tok.eos_token, tok.pad_token) == ("<s>", "</s>", "<pad>")
        assert hf.config.vision_config.model_type == "pixtral"
        assert all(tok.convert_tokens_to_ids(t) is not None for t in ("[IMG_BREAK]", "[IMG_END]"))
        processor = json.loads((path / "processor_config.json").read_text())
        assert processor["processor_class"] == "PixtralProcessor"
        assert processor["spatial_merge_size"] == (2 if family == "mistral3" else 1)
    elif family == "llava":
        assert text == "USER: <image>\n<image>\nWhat is 2+3? And here? ASSISTANT:"
        assert (tok.bos_token, tok.eos_token, tok.pad_token) == ("<s>", "</s>", "<pad>")
    else:
        assert text == ("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
                        "<|vision_start|><|image_pad|><|vision_end|>What is 2+3?"
                        "<|vision_start|><|image_pad|><|vision_end|>And here?<|im_end|>\n<|im_start|>assistant\n")
        assert (tok.bos_token, tok.eos_token, tok.pad_token) == (None, "<|im_end|>", "<|endoftext|>")
    plain = tok.apply_chat_template([{"role": "user", "content": "hi"}], add_generation_prompt=True, tokenize=False)
    assert "hi" in plain and image_token not in plain
    model = load_hf_vlm(path).eval()
    ids, pixels = model.expand_prompt(tok(text).input_ids, [picture(40, 40), picture(20, 70, seed=1)])
    out = model.generate([ids], [pixels], max_new_tokens=4)[0]
    assert 1 <= len(out) <= 4


def test_tool_is_deterministic_and_has_a_cli(checkpoints, tmp_path, capsys):
    again = make_tiny_vlm_checkpoint(tmp_path / "again", "qwen2_5_vl", seed=0)
    for name in ("model.safetensors", "tokenizer.json", "config.json", "preprocessor_config.json"):
        assert (again / name).read_bytes() == (checkpoints["qwen2_5_vl"] / name).read_bytes(), name
    other = make_tiny_vlm_checkpoint(tmp_path / "other", "qwen2_5_vl", seed=1)
    assert (other / "model.safetensors").read_bytes() != (again / "model.safetensors").read_bytes()
    main([str(tmp_path / "cli"), "--family", "llava"])
    assert "wrote a tiny llava checkpoint" in capsys.readouterr().out
    assert (tmp_path / "cli" / "model.safetensors").read_bytes() == (checkpoints["llava"] / "model.safetensors").read_bytes()
    main([str(tmp_path / "cli3"), "--family", "mistral3"])
    assert "wrote a tiny mistral3 checkpoint" in capsys.readouterr().out
    for name in ("model.safetensors", "tokenizer.json", "processor_config.json"):
        assert (tmp_path / "cli3" / name).read_bytes() == (checkpoints["mistral3"] / name).read_bytes(), name
    with pytest.raises(ValueError, match="family must be one of"):
        make_tiny_vlm_checkpoint(tmp_path / "x", "gpt2")
