"""Hugging Face interop: our VLM exports as LLaVA / Mistral3 with the same logits; local LLaVA,
Qwen2-VL and Qwen2.5-VL checkpoints load and train; Qwen2.5-VL gets its mm_token_type_ids."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from einops import repeat
from PIL import Image
from transformers import (AutoModelForImageTextToText, CLIPVisionConfig, LlamaConfig, LlavaConfig,
                          LlavaForConditionalGeneration, Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration,
                          Qwen2VLConfig, Qwen2VLForConditionalGeneration)

from k15.data.packing import model_inputs, pack_examples
from k15.errors import CheckpointError, DataError
from k15.models.hf_vlm import load_hf_vlm
from k15.models.vlm import freeze, load_vlm, save_vlm, to_transformers

IMG = 8  # image token id of the tiny foreign checkpoints


def doc(vlm, tok, images, text="3+4="):
    """<bos> image ... text, one placeholder run per image."""
    ids = [tok.bos_token_id]
    for img in images:
        ids += [vlm.image_token_id] * vlm.tokens_per_image(*img.shape[-2:]) + tok.encode(text, add_special_tokens=False)
    return ids


@pytest.mark.parametrize("merge, tied, family", [(1, True, "llama"), (2, False, "qwen2")])
def test_export_loads_in_transformers_with_identical_logits(tmp_path, make_vlm, tok, merge, tied, family):
    vlm = make_vlm(merge=merge, tied=tied, family=family)
    images = [torch.randn(3, 16, 112), torch.randn(3, 16, 112)]
    ids = torch.tensor([doc(vlm, tok, images)])
    with torch.no_grad():
        ours = vlm(ids, images=images).logits
    save_vlm(vlm, tok, tmp_path)
    hf = AutoModelForImageTextToText.from_pretrained(tmp_path, local_files_only=True).eval()
    assert type(hf).__name__ == ("LlavaForConditionalGeneration" if merge == 1 else "Mistral3ForConditionalGeneration")
    assert (hf.lm_head.weight.data_ptr() == hf.get_input_embeddings().weight.data_ptr()) == tied
    kwargs = {"image_sizes": torch.tensor([[16, 112]] * 2)} if merge > 1 else {}
    with torch.no_grad():
        theirs = hf(input_ids=ids, pixel_values=torch.stack(images), **kwargs).logits
    # Identical up to float rounding: HF patchifies with a stride-p convolution (we: einops + matmul) and
    # attends over all images at once under a block mask; the two differ by ~1e-7 per op, not in any weight.
    torch.testing.assert_close(theirs, ours, rtol=0, atol=1e-5)
    assert torch.equal(theirs.argmax(-1), ours.argmax(-1))
    again, again_tok = load_vlm(tmp_path)  # our own loader reads the same directory back exactly
    with torch.no_grad():
        assert torch.equal(again(ids, images=images).logits, ours)
    assert again_tok.encode("3+4=") == tok.encode("3+4=")
    wrapped = load_hf_vlm(tmp_path)  # and the generic loader for foreign checkpoints agrees
    assert wrapped.tokens_per_image(16, 112) == vlm.tokens_per_image(16, 112)
    with torch.no_grad():
        torch.testing.assert_close(wrapped(ids, images=images).logits, ours, rtol=0, atol=1e-5)
    assert json.loads((tmp_path / "k15_vlm.json").read_text())["format"] == ("llava" if merge == 1 else "mistral3")


def test_embedding_softmax_model_saves_in_k15_layout(tmp_path, make_vlm, tok):
    vlm = make_vlm(kind="embedding_softmax")
    with pytest.raises(CheckpointError, match="no transformers counterpart"):
        to_transformers(vlm)
    save_vlm(vlm, tok, tmp_path)
    assert (tmp_path / "decoder" / "config.json").is_file() and not (tmp_path / "config.json").exists()
    again, _ = load_vlm(tmp_path)
    images = [torch.randn(3, 16, 112)]
    ids = torch.tensor([doc(vlm, tok, images)])
    with torch.no_grad():
        assert torch.equal(again(ids, images=images).logits, vlm(ids, images=images).logits)
    with pytest.raises(CheckpointError, match="not a k15 VLM directory"):
        load_vlm(tmp_path / "decoder")


# ------------------------------------------------------------------------------------------------
# Foreign checkpoints


TEXT = dict(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, max_position_embeddings=128, bos_token_id=1, eos_token_id=2, pad_token_id=0)
QWEN_TEXT = {**TEXT, "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 1, 1]}}
QWEN_IDS = dict(image_token_id=IMG, video_token_id=9, vision_start_token_id=10, vision_end_token_id=11)


def save_checkpoint(family: str, path) -> None:
    torch.manual_seed(0)
    if family == "llava_clip":
        vision = CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                                  image_size=32, patch_size=8)
        model = LlavaForConditionalGeneration(LlavaConfig(vision_config=vision, text_config=LlamaConfig(**TEXT),
                                                          image_token_index=IMG, vision_feature_layer=-2))
    elif family == "qwen2_vl":
        vision = dict(depth=2, embed_dim=32, hidden_size=32, num_heads=2, patch_size=8, spatial_merge_size=2,
                      temporal_patch_size=2, mlp_ratio=2)
        model = Qwen2VLForConditionalGeneration(Qwen2VLConfig(text_config=QWEN_TEXT, vision_config=vision, **QWEN_IDS))
    else:
        vision = dict(depth=2, hidden_size=32, out_hidden_size=32, intermediate_size=64, num_heads=2, patch_size=8,
                      spatial_merge_size=2, temporal_patch_size=2, window_size=32, fullatt_block_indexes=[1])
        config = Qwen2_5_VLConfig(text_config=QWEN_TEXT, vision_config=vision, **QWEN_IDS)
        model = Qwen2_5_VLForConditionalGeneration(config)
    model.save_pretrained(path)


@pytest.mark.parametrize("family", ["llava_clip", "qwen2_vl", "qwen2_5_vl"])
def test_local_checkpoint_loads_and_trains(tmp_path, family):
    save_checkpoint(family, tmp_path)
    model = load_hf_vlm(tmp_path)
    if family == "llava_clip":
        images = [torch.randn(3, 32, 32), torch.randn(3, 32, 32)]
        assert model.tokens_per_image(32, 32) == 16  # 4x4 patches; the CLS token is dropped ("default")
        with pytest.raises(DataError, match="reads 32x32 images"):
            model.tokens_per_image(16, 32)
    else:
        images = [torch.randn(3, 32, 32), torch.randn(3, 16, 64)]  # any size that is a multiple of 16
        assert [model.tokens_per_image(*i.shape[-2:]) for i in images] == [4, 4]
    n = [model.tokens_per_image(*i.shape[-2:]) for i in images]
    docs = [[1, 3, 4] + [IMG] * n[0] + [5, 6, 7], [1, 3] + [IMG] * n[1] + [12, 13]]
    packed = pack_examples([(d, d) for d in docs], row_len=64, pad_id=0)
    model.train()
    out = model(**model_inputs(packed), images=images)
    out.loss.backward()
    assert torch.isfinite(out.loss) and model.model.lm_head.weight.grad.abs().sum() > 0
    vision = [p for name, p in model.model.named_parameters() if ".vision_tower." in name or ".visual." in name]
    assert vision[0].grad is not None and vision[0].grad.abs().sum() > 0  # the loss reaches the tower's input layer
    # packed rows compute exactly what each document alone computes (M-RoPE restarts per document)
    model.eval()
    with torch.no_grad():
        logits = model(**{k: v for k, v in model_inputs(packed).items() if k != "labels"}, images=images).logits[0]
        start = 0
        for d, img in zip(docs, images):
            alone = model(torch.tensor([d]), images=[img]).logits[0]
            torch.testing.assert_close(logits[start : start + len(d)], alone, rtol=1e-5, atol=1e-5)
            start += len(d)
    # the tower-only stage works on a foreign checkpoint too
    counts = freeze(model, ("decoder",))
    assert counts["decoder"] == 0 and counts["tower"] > 0 and counts["projector"] > 0
    assert not model.model.lm_head.weight.requires_grad
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == counts["tower"] + counts["projector"]
    freeze(model, ())
    mismatch = f"{n[0] - 1} '<image>' placeholder tokens in the input but 1 images give {n[0]}"
    with pytest.raises(DataError, match=mismatch):
        model(torch.tensor([[1] + [IMG] * (n[0] - 1)]), images=images[:1])


def test_qwen2_5_vl_gets_mm_token_type_ids(tmp_path):
    """Without mm_token_type_ids Qwen2.5-VL silently uses 1D positions for the image tokens."""
    save_checkpoint("qwen2_5_vl", tmp_path)
    model = load_hf_vlm(tmp_path).eval()
    hf = model.model
    image = torch.randn(3, 16, 32)
    ids = torch.tensor([[1, 2, 10] + [IMG] * 2 + [11, 3, 4, 5]])
    pixels = repeat(image, "c (gh m1 p1) (gw m2 p2) -> (gh gw m1 m2) (c t p1 p2)", m1=2, m2=2, p1=8, p2=8, t=2)
    grid = torch.tensor([[1, 2, 4]])
    with torch.no_grad():
        right = hf(input_ids=ids, pixel_values=pixels, image_grid_thw=grid, mm_token_type_ids=(ids == IMG).int()).logits
        wrong = hf(input_ids=ids, pixel_values=pixels, image_grid_thw=grid).logits
        ours = model(ids, images=[image]).logits
    assert (right - wrong).abs().max() > 1e-4  # the silent fallback changes the logits ...
    assert torch.equal(ours, right)  # ... and our wrapper matches the correct ones
    assert torch.equal(model.model_inputs(ids, [image])["mm_token_type_ids"], (ids == IMG).to(torch.int32))
    # greedy generation through the wrapper == teacher-forced argmax (M-RoPE deltas carried across steps)
    prompt = ids[0].tolist()
    completion = model.generate([prompt, prompt[:2]], [[image], []], max_new_tokens=5)[0]
    with torch.no_grad():
        logits = model(torch.tensor([prompt + completion]), images=[image]).logits[0]
    assert logits[len(prompt) - 1 : -1].argmax(-1).tolist() == completion


def test_qwen_patch_layout_matches_its_image_processor(tmp_path):
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    save_checkpoint("qwen2_vl", tmp_path)
    model = load_hf_vlm(tmp_path)
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 255, (16, 32, 3), dtype=np.uint8))
    reference = Qwen2VLImageProcessorPil(patch_size=8, merge_size=2, temporal_patch_size=2, image_mean=[0.5] * 3,
                                         image_std=[0.5] * 3, size={"shortest_edge": 256, "longest_edge": 4096})
    expected = reference(images=[image], return_tensors="pt")
    model.mean = model.std = 0.5
    pixels = model.image_processor()(image)
    inputs = model.model_inputs(torch.tensor([[IMG] * 2]), [pixels])
    torch.testing.assert_close(inputs["pixel_values"], expected["pixel_values"], rtol=0, atol=1e-6)
    assert torch.equal(inputs["image_grid_thw"], expected["image_grid_thw"])


def test_unsupported_or_missing_checkpoints_are_clear_errors(tmp_path):
    with pytest.raises(CheckpointError, match="no config.json"):
        load_hf_vlm(tmp_path)
    from transformers import LlamaForCausalLM

    LlamaForCausalLM(LlamaConfig(**TEXT)).save_pretrained(tmp_path)
    with pytest.raises(CheckpointError, match="unsupported vision-language model type 'llama'"):
        load_hf_vlm(tmp_path)
