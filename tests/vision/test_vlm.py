"""The VLM backbone: splicing images into text, packed batches, generation, the mismatch error, freezing."""

from __future__ import annotations

import pytest
import torch

from k15.config import ModelConfig
from k15.data.packing import IGNORE, model_inputs, pack_examples
from k15.errors import DataError
from k15.models.projector import ProjectorConfig
from k15.models.vision import ImageProcessor, VisionConfig, fit_size
from k15.models.vlm import build_vlm, check_placeholders, expand_placeholders, freeze
from k15.synthetic.images import render_text


def text(tok, s: str) -> list[int]:
    return tok.encode(s, add_special_tokens=False)


def test_images_of_any_size_at_any_position(make_vlm, tok):
    vlm = make_vlm()
    I = vlm.image_token_id
    images = [torch.randn(3, 16, 112), torch.randn(3, 8, 16), torch.randn(3, 16, 112), torch.randn(3, 32, 32)]
    n = [vlm.tokens_per_image(*img.shape[-2:]) for img in images]
    assert n == [28, 2, 28, 16]
    # image at the start, two adjacent images mid-row, one at the very end of row 1
    row0 = [I] * n[0] + text(tok, "3+4=") + [I] * n[1] + [I] * n[2] + text(tok, "7")
    row1 = text(tok, "ab") + [I] * n[3]
    width = max(len(row0), len(row1))
    ids = torch.full((2, width), tok.pad_token_id)
    ids[0, : len(row0)], ids[1, : len(row1)] = torch.tensor(row0), torch.tensor(row1)
    with torch.no_grad():
        embeds = vlm.embed(ids, images)
        features = vlm.encode_images(images)
    assert [f.shape for f in features] == [(k, 32) for k in n]
    assert torch.equal(embeds[0, : n[0]], features[0])
    start = n[0] + 4
    assert torch.equal(embeds[0, start : start + n[1]], features[1])
    assert torch.equal(embeds[0, start + n[1] : start + n[1] + n[2]], features[2])
    assert torch.equal(embeds[1, 2 : 2 + n[3]], features[3])
    assert torch.equal(embeds[0, n[0]], vlm.get_input_embeddings().weight[ids[0, n[0]]])  # text untouched

    vlm.train()
    labels = ids.clone()
    out = vlm(ids, images=images, labels=labels)
    out.loss.backward()
    for part in (vlm.tower, vlm.projector, vlm.decoder):
        assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in part.parameters())
    assert vlm.tower.patch_embed.weight.grad.abs().sum() > 0
    # placeholders are never prediction targets: the same loss as with their labels masked by hand
    masked = labels.masked_fill(ids == I, IGNORE)
    with torch.no_grad():
        assert torch.allclose(vlm(ids, images=images, labels=masked).loss, out.loss)


def test_packed_batch_equals_separate_documents(make_vlm, tok):
    vlm = make_vlm(merge=2)
    I = vlm.image_token_id
    a, b, c = torch.randn(3, 16, 112), torch.randn(3, 32, 32), torch.randn(3, 16, 112)
    docs = [
        ([tok.bos_token_id] + [I] * 7 + text(tok, "1+2=3"), [a]),
        ([tok.bos_token_id] + text(tok, "xy") + [I] * 4 + text(tok, "z") + [I] * 7, [b, c]),
    ]
    packed = pack_examples([(ids, ids) for ids, _ in docs], row_len=64, pad_id=tok.pad_token_id)
    assert packed["input_ids"].shape[0] == 1
    images = [img for _, imgs in docs for img in imgs]
    with torch.no_grad():
        logits = vlm(**model_inputs(packed), images=images).logits[0]
        start = 0
        for ids, imgs in docs:
            alone = vlm(torch.tensor([ids]), images=imgs).logits[0]
            torch.testing.assert_close(logits[start : start + len(ids)], alone, rtol=1e-5, atol=1e-5)
            start += len(ids)
        # doc_ids instead of a ready-made mask
        again = vlm(packed["input_ids"], images=images, position_ids=packed["position_ids"],
                    doc_ids=packed["doc_ids"]).logits
    assert torch.equal(again[0], logits)


def test_placeholder_mismatch_is_a_clear_error(make_vlm, tok):
    vlm = make_vlm()
    I = vlm.image_token_id
    img = torch.randn(3, 16, 112)  # 28 tokens
    ids = torch.tensor([[1] + [I] * 27 + [5]])
    with pytest.raises(DataError, match=r"27 '<image>' placeholder tokens in the input but 1 images give 28 image"):
        vlm(ids, images=[img])
    with pytest.raises(DataError, match=r"0 '<image>' placeholder tokens .* 1 images give 28"):
        vlm(torch.tensor([[1, 5, 6]]), images=[img])
    with pytest.raises(DataError, match=r"2 '<image>' placeholder tokens .* 0 images give 0"):
        vlm(torch.tensor([[1, I, I, 6]]))
    # equal totals, wrong split: runs of 10 and 46 cannot be two 28-token images
    ids = torch.tensor([[1] + [I] * 10 + [5] + [I] * 46])
    with pytest.raises(DataError, match=r"a run of 10 '<image>' tokens at row 0, column 1 does not split into whole"):
        vlm(ids, images=[img, img])
    with pytest.raises(DataError, match="not a multiple of 8 px"):
        vlm(torch.tensor([[1, I]]), images=[torch.randn(3, 12, 16)])
    check_placeholders(torch.tensor([[I] * 56]), I, [28, 28])  # adjacent images form one run
    assert expand_placeholders([1, I, 2, I], I, [2, 3]) == [1, I, I, 2, I, I, I]
    with pytest.raises(DataError, match="1 '<image>' placeholders but 2 images"):
        expand_placeholders([1, I], I, [2, 3])


def test_greedy_generation_with_images_matches_teacher_forcing(tok):
    torch.manual_seed(0)
    cfg = ModelConfig(hidden_size=32, num_layers=2, num_heads=4, num_kv_heads=2, intermediate_size=64, max_seq_len=128)
    vision = VisionConfig(patch_size=8, hidden_size=32, num_heads=2, intermediate_size=64, max_side=112)
    vlm = build_vlm(cfg, tok, vision, ProjectorConfig()).eval()
    with torch.no_grad():  # a wide init: a varied greedy path instead of one repeated token
        for p in vlm.parameters():
            p.normal_(0.0, 0.3)
    I = vlm.image_token_id
    bos = tok.bos_token_id
    imgs = [torch.randn(3, 16, 112), torch.randn(3, 16, 16), torch.randn(3, 16, 112)]
    prompts = [[bos] + [I] * 28 + text(tok, "3+4="), [bos] + text(tok, "look:") + [I] * 4 + text(tok, "and") + [I] * 28]
    per_prompt = [[imgs[0]], [imgs[1], imgs[2]]]
    batched = vlm.generate(prompts, per_prompt, max_new_tokens=8, pad_token_id=tok.pad_token_id)
    for prompt, images, completion in zip(prompts, per_prompt, batched):
        assert vlm.generate([prompt], [images], max_new_tokens=8) == [completion]
        with torch.no_grad():
            logits = vlm(torch.tensor([prompt + completion]), images=images).logits[0]
        assert logits[len(prompt) - 1 : -1].argmax(-1).tolist() == completion
    assert len(set(tuple(c) for c in batched)) == 2
    stop = batched[0][2]
    stopped = vlm.generate(prompts[:1], per_prompt[:1], max_new_tokens=8, stop_token_ids=[stop])
    assert stopped == [batched[0][: batched[0].index(stop) + 1]]  # cut after the stop token, which is kept


def test_freeze_keeps_frozen_parts_unchanged(make_vlm):
    vlm = make_vlm()
    vlm.train()
    assert freeze(vlm, ("decoder",))["decoder"] == 0
    before = {k: v.clone() for k, v in vlm.state_dict().items()}
    opt = torch.optim.AdamW(vlm.parameters(), lr=1e-2, weight_decay=0.1)
    I = vlm.image_token_id
    ids = torch.tensor([[1] + [I] * 28 + [5, 6, 7]])
    vlm(ids, images=[torch.randn(3, 16, 112)], labels=ids).loss.backward()
    opt.step()
    after = vlm.state_dict()
    for k in before:
        if k.startswith("decoder."):
            assert torch.equal(before[k], after[k]), k
    assert not torch.equal(before["tower.patch_embed.weight"], after["tower.patch_embed.weight"])
    assert not torch.equal(before["projector.linear_2.weight"], after["projector.linear_2.weight"])
    trainable = freeze(vlm, ())
    assert all(n > 0 for n in trainable.values())
    assert all(p.requires_grad for p in vlm.parameters())
    freeze(vlm, ("tower", "projector"))
    assert not any(p.requires_grad for p in vlm.tower.parameters()) and vlm.decoder.lm_head.weight.requires_grad
    with pytest.raises(ValueError, match="unknown model parts.*vision"):
        freeze(vlm, ("vision",))


def test_token_merge_and_embedding_softmax_projector(make_vlm, tok):
    merged = make_vlm(merge=2)
    assert merged.tokens_per_image(16, 112) == 7 and merged.tokens_per_image(32, 32) == 4
    vlm = make_vlm(kind="embedding_softmax")
    readout = vlm.projector.readout_ids
    special = set(tok.all_special_ids)
    assert readout.tolist() == [i for i in range(len(tok)) if i not in special]
    assert vlm.image_token_id not in readout.tolist()
    img = torch.randn(2, 3, 16, 112)
    with torch.no_grad():
        feats = vlm.encode_images(img)
        logits = vlm.readout_logits(img)
    assert logits[0].shape == (28, len(readout))
    rows = vlm.get_input_embeddings().weight[readout]
    torch.testing.assert_close(feats[0], torch.softmax(logits[0], -1) @ rows)
    # image tokens live in the decoder's embedding space: gradients reach its embedding rows
    vlm.train()
    I = vlm.image_token_id
    ids = torch.tensor([[1] + [I] * 28 + [5, 6]])
    vlm(ids, images=img[:1], labels=ids).loss.backward()
    assert vlm.get_input_embeddings().weight.grad[readout].abs().sum() > 0
    chars = ProjectorConfig(kind="embedding_softmax", readout_tokens=list("0123456789+-= "))
    small_text = ModelConfig(hidden_size=32, num_layers=1, num_heads=2, num_kv_heads=2, intermediate_size=32)
    small = build_vlm(small_text, tok, VisionConfig(), chars)
    assert small.projector.readout_ids.tolist() == tok.encode("0123456789+-= ", add_special_tokens=False)


def test_image_processor_fits_sizes():
    proc = ImageProcessor.for_tower(VisionConfig())  # 16-px patches, max side 224, 4096 pixels
    strip = render_text("7-2+4=")
    pixels = proc(strip)
    assert pixels.shape == (3, 16, 224) and pixels.min() >= -1 and pixels.max() <= 1
    assert fit_size(48, 64, 224, 4096, 16) == (48, 64)  # already fits: never resampled
    assert fit_size(100, 300, 224, 4096, 16) == (32, 112)
    assert fit_size(500, 20, 224, 4096, 16) == (224, 16)
    from PIL import Image

    assert proc(Image.new("RGB", (640, 480))).shape == (3, 48, 80)  # 3840 pixels, aspect 1.67 (was 1.33)
