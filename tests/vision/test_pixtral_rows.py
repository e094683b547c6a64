"""Mistral3 / Pixtral-LLaVA checkpoints with PixtralProcessor's image rows: each image is written as rows of
[IMG], every row ended by [IMG_BREAK] and the last by [IMG_END] (the model fills only the [IMG] positions).

The checkpoints are tools/make_tiny_vlm_checkpoint.py's (tiny, random init; Pixtral tower with 8-px patches,
a 2x2 merge for Mistral3, none for Pixtral-LLaVA; longest edge 64 px). Everywhere an image's tokens are
written or counted goes through the model's `image_tokens(h, w)`: the prompt route, the preflight count, the
vision stages' documents, the rollout engine; a flat run in a row checkpoint is one line.
"""

from __future__ import annotations

import io
import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import PixtralImageProcessorPil

from k15.chat import chat_format_of
from k15.config import DataConfig, ModelConfig
from k15.data.mixture import tokenize_document
from k15.data.packing import IGNORE
from k15.data.prompts import EmbeddedImage, PromptRecord
from k15.data.shards import Document
from k15.data.vision_prompts import image_prompt, image_tokens
from k15.errors import CheckpointError, DataError
from k15.models.hf_vlm import hf_vlm_facts, load_hf_vlm
from k15.models.policy import load_policy
from k15.models.vlm import check_placeholders, expand_placeholders, image_rows, save_vlm
from k15.rl.batch import token_logprobs
from k15.rollout.sampling import SamplingParams
from k15.rollout.vision import ImagePrompt, VisionRolloutEngine
from tools.make_tiny_vlm_checkpoint import make_tiny_vlm_checkpoint

FAMILIES = ["mistral3", "llava_pixtral"]
UNIT = {"mistral3": 16, "llava_pixtral": 8}  # patch 8 x merge
I, B, E = "[IMG]", "[IMG_BREAK]", "[IMG_END]"
# (height, width): inside the 64-px limit, off the unit grid, above it (shrunk), extreme aspect ratios
SIZES = [(24, 16), (20, 40), (90, 70), (64, 64), (5, 300), (33, 17)]


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    root = tmp_path_factory.mktemp("pixtral_rows")
    return {family: make_tiny_vlm_checkpoint(root / family, family) for family in FAMILIES}


@pytest.fixture(scope="module")
def loaded(checkpoints):
    """(wrapper, tokenizer) per family, loaded the way a run loads them (load_policy)."""
    return {family: load_policy(ModelConfig(), path) for family, path in checkpoints.items()}


def picture(height: int, width: int, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


def png_bytes(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def rows_by_hand(height: int, width: int, unit: int) -> list[str]:
    """PixtralProcessor's replacement of one [IMG], written out: height / unit rows of width / unit [IMG],
    each row followed by [IMG_BREAK], the very last token [IMG_END]."""
    tokens = []
    for row in range(height // unit):
        tokens += [I] * (width // unit) + [E if row == height // unit - 1 else B]
    return tokens


# ------------------------------------------------------------------------------------------------
# The layout itself


def test_the_row_layout_by_hand(loaded):
    assert image_rows(5, 6, 7, rows=3, cols=2) == [5, 5, 6, 5, 5, 6, 5, 5, 7]
    assert image_rows(5, 6, 7, rows=1, cols=1) == [5, 7]
    for family, unit in UNIT.items():
        model, tok = loaded[family]
        assert model.image_rows == tuple(tok.convert_tokens_to_ids([B, E]))
        # a 24x16-pixel image at unit 8: 3 rows of 2; at unit 16 the same rows come from 48x32 pixels
        h, w = 3 * unit, 2 * unit
        assert tok.convert_ids_to_tokens(model.image_tokens(h, w)) == [I, I, B, I, I, B, I, I, E]
        assert model.tokens_per_image(h, w) == 6  # features: the [IMG] tokens only
        assert tok.convert_ids_to_tokens(model.image_tokens(unit, 3 * unit)) == [I, I, I, E]  # one row


def test_k15s_own_exports_keep_their_flat_runs(tmp_path, make_vlm, tok):
    """A k15 export in the Mistral3 layout has no [IMG_BREAK] in its tokenizer: it reads one flat run per image."""
    save_vlm(make_vlm(merge=2), tok, tmp_path)
    model = load_hf_vlm(tmp_path)
    assert model.image_rows is None and hf_vlm_facts(tmp_path).image_rows is None
    assert model.image_tokens(16, 32) == [model.image_token_id] * 2


def test_check_placeholders_reads_row_runs(loaded):
    model, tok = loaded["mistral3"]
    img, brk, end = model.image_token_id, *model.image_rows
    a, b = model.image_tokens(48, 32), model.image_tokens(16, 48)  # 3 rows of 2; 1 row of 3
    good = [1, 20, *a, *b, 21]  # two row images back to back: [IMG_END] keeps them apart
    check_placeholders(torch.tensor([good]), img, [a, b])
    assert expand_placeholders([1, 20, img, img, 21], img, [a, b]) == good
    # a flat run where the checkpoint reads rows (what k15 wrote before): one line, naming the image
    flat = [1, 20, *[img] * 6, *b, 21]
    with pytest.raises(DataError, match=r"^image placeholders and image features do not match: image 0 at row 0, "
                                        r"column 2 is not written as its 3 rows of 2 image tokens[^\n]*$"):
        check_placeholders(torch.tensor([flat]), img, [a, b])
    # rows in the wrong places: breaks and end swapped
    swapped = [1, *[end if t == brk else brk if t == end else t for t in a], *b]
    with pytest.raises(DataError, match="image 0 at row 0, column 1 is not written as its 3 rows"):
        check_placeholders(torch.tensor([swapped]), img, [a, b])
    # a text token inside a row: the same number of image tokens, not the image's rows
    split = [1, *a[:1], 20, *a[1:2], *a[3:], *b]
    with pytest.raises(DataError, match="image 0 at row 0, column 1 is not written as its 3 rows"):
        check_placeholders(torch.tensor([split]), img, [a, b])
    # an image missing: the count line
    with pytest.raises(DataError, match="do not match: 6 '<image>' placeholder tokens in the input but 2 images "
                                        "give 9"):
        check_placeholders(torch.tensor([[1, *a, 2]]), img, [a, b])
    # the model checks its inputs the same way: the flat prompt never reaches the transformers model
    pixels = [torch.zeros(3, 48, 32), torch.zeros(3, 16, 48)]
    with pytest.raises(DataError, match="is not written as its 3 rows of 2 image tokens"):
        model(torch.tensor([flat]), images=pixels)
    # and the engine refuses an expanded prompt in the wrong layout, naming the prompt
    with pytest.raises(DataError, match="^prompt 0: image placeholders and image features do not match"):
        VisionRolloutEngine(model, 2, 64).prepare([ImagePrompt(flat, pixels, expanded=True)])


def test_flat_images_still_share_a_run(make_vlm):
    img = 8
    check_placeholders(torch.tensor([[1, *[img] * 5, 2]]), img, [[img] * 2, 3])  # lists and counts alike
    with pytest.raises(DataError, match="a run of 5 '<image>' tokens at row 0, column 1 does not split into whole"):
        check_placeholders(torch.tensor([[1, *[img] * 5, 2, img]]), img, [4, 2])


# ------------------------------------------------------------------------------------------------
# Our route == PixtralProcessor


@pytest.mark.parametrize("family", FAMILIES)
def test_our_prompt_ids_and_pixels_are_pixtral_processors(checkpoints, loaded, family):
    """The chat template -> ids -> expand_prompt, and pixels: PixtralProcessor's layout written out by hand from
    the image processor's sizes (as PixtralProcessor asks for them: patch x merge), pixels equal exactly;
    two images of different sizes in one prompt, for several sizes. (AutoProcessor itself, where it builds:
    tests/vision/test_hf_processing.py; PixtralProcessor needs torchvision.)"""
    model, tok = loaded[family]
    unit = UNIT[family]
    reference = PixtralImageProcessorPil.from_pretrained(checkpoints[family])
    chat = chat_format_of(DataConfig(chat_template="model"), tok, model)
    for i, (first, second) in enumerate(zip(SIZES, SIZES[1:] + SIZES[:1])):
        images = [picture(*first, seed=i), picture(*second, seed=10 + i)]
        expected = reference(images=images, patch_size={"height": unit, "width": unit}, return_tensors="pt")
        sizes = expected["image_sizes"].tolist()
        text = tok.apply_chat_template([{"role": "user", "content": [
            {"type": "image"}, {"type": "text", "text": "What is 2+3?"}, {"type": "image"},
            {"type": "text", "text": "And here?"}]}], tokenize=False)
        assert text == "<s>[INST][IMG]What is 2+3?[IMG]And here?[/INST]"
        ids, pixels = model.expand_prompt(tok(text, add_special_tokens=False).input_ids, images)
        words = tok.convert_ids_to_tokens(tok("What is 2+3?", add_special_tokens=False).input_ids)
        more = tok.convert_ids_to_tokens(tok("And here?", add_special_tokens=False).input_ids)
        assert tok.convert_ids_to_tokens(ids) == ["<s>", "[INST]", *rows_by_hand(*sizes[0], unit), *words,
                                                  *rows_by_hand(*sizes[1], unit), *more, "[/INST]"], (first, second)
        inputs = model.model_inputs(torch.tensor([ids]), pixels)
        assert torch.equal(inputs["pixel_values"], expected["pixel_values"]), (first, second)
        assert torch.equal(inputs["image_sizes"], expected["image_sizes"])
        # the pipeline's route (a prompt record with <image> markers, the run's chat format) gives the same
        embedded = tuple(EmbeddedImage(png_bytes(img), f"p{j}.png") for j, img in enumerate(images))
        record = PromptRecord("r", "<image>What is 2+3?<image>And here?", "5", None, "math", images=embedded)
        prompt = image_prompt(record, tok, model, chat)
        assert prompt.ids == ids and all(torch.equal(a, b) for a, b in zip(prompt.images, pixels))
        # and the preflight counts exactly these tokens, from the image headers and a weightless model
        facts = hf_vlm_facts(checkpoints[family])
        assert facts.image_rows == model.image_rows
        assert image_tokens(record, facts) == len(ids) - len(chat.prompt_ids(tok, record.prompt, I)) + 2


def test_documents_of_the_vision_stages_are_written_in_rows(loaded):
    model, tok = loaded["mistral3"]
    image = Image.new("RGB", (32, 48), (200, 0, 0))  # 48x32 px: 3 rows of 2 at unit 16
    doc = Document(key="d", kind="caption", segments=["a red box: ", image, " done"])
    ids, labels, pixels = tokenize_document(doc, tok, model.image_processor(), model.image_tokens,
                                            model.image_token_id)
    rows = model.image_tokens(48, 32)
    start = ids.index(model.image_token_id)
    assert ids[start: start + len(rows)] == rows and len(rows) == 9
    assert all(labels[i] == IGNORE for i in range(start, start + len(rows)))  # breaks untrained like the images
    with torch.no_grad():
        assert model(torch.tensor([ids]), images=pixels, labels=torch.tensor([labels])).loss.isfinite()


def test_processor_config_that_disagrees_with_the_model_is_one_line(checkpoints, tmp_path):
    bad = tmp_path / "bad"
    shutil.copytree(checkpoints["mistral3"], bad)
    config = json.loads((bad / "processor_config.json").read_text())
    (bad / "processor_config.json").write_text(json.dumps({**config, "spatial_merge_size": 1}))
    with pytest.raises(CheckpointError, match=r"patch / spatial merge sizes \(8, 1\) differ from the model's \(8, 2\)"):
        load_hf_vlm(bad)
    (bad / "processor_config.json").write_text(json.dumps({**config, "image_end_token": "[NO_SUCH_END]"}))
    with pytest.raises(CheckpointError, match=r"has the row break '\[IMG_BREAK\]' but no image end '\[NO_SUCH_END\]'"):
        load_hf_vlm(bad)


# ------------------------------------------------------------------------------------------------
# The rollout engine


def engine_prompts(model, tok) -> list[ImagePrompt]:
    """0, 1 and 2 images of different sizes (rows of different widths and counts) per prompt; Pillow and
    pixel tensors, expanded and not."""
    img = model.image_token_id
    ids = lambda s: tok.encode(s, add_special_tokens=False)  # noqa: E731
    unit = model.patch_size * model.merge
    g = torch.Generator().manual_seed(3)
    px = lambda r, c: torch.randn(3, r * unit, c * unit, generator=g)  # noqa: E731
    a, b, c = px(2, 3), px(3, 1), px(1, 4)
    expanded = ImagePrompt(expand_placeholders([1, img, *ids("how many?")], img, [model.image_tokens(*a.shape[-2:])]),
                           [a], expanded=True)
    return [
        expanded,
        ImagePrompt([1, *ids("no image, text only: 1+2=")], []),
        ImagePrompt([1, img, *ids(" and "), img, *ids("?")], [b, c]),
        ImagePrompt([1, *ids("12"), img], [picture(20, 40, seed=4)]),
        ImagePrompt([1, img, img], [c, a]),
    ]


@pytest.mark.parametrize("family", FAMILIES)
def test_rollouts_equal_hf_generate_and_the_training_forward(loaded, family):
    model, tok = loaded[family]
    model.model.generation_config.suppress_tokens = [model.image_token_id]  # the engine never samples it
    prompts = engine_prompts(model, tok)
    engine = VisionRolloutEngine(model, max_batch_size=2, max_seq_len=128)  # chunks: features follow their rows
    rows = engine.prepare(prompts)
    refs = [list(r) for r in rows]
    pixels = [[p if isinstance(p, torch.Tensor) else model.image_processor()(p) for p in pr.images] for pr in prompts]
    assert sum(r.count(model.image_rows[0]) for r in refs) > 0  # the rows are there
    greedy = SamplingParams(max_new_tokens=10, temperature=0.0, stop_token_ids=(tok.eos_token_id,))
    out = engine.generate(prompts, greedy)
    expected = model.generate(refs, pixels, max_new_tokens=10, stop_token_ids=[tok.eos_token_id],
                              pad_token_id=tok.pad_token_id)
    assert out.tokens == expected
    assert len({tuple(t) for t in expected}) > 1
    sampled = engine.generate(prompts, SamplingParams(max_new_tokens=10), torch.Generator().manual_seed(0))
    width = max(len(r) + len(t) for r, t in zip(refs, sampled.tokens))
    ids = torch.zeros(len(refs), width, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, (r, t) in enumerate(zip(refs, sampled.tokens)):
        ids[i, : len(r) + len(t)], mask[i, : len(r) + len(t)] = torch.tensor(r + t), 1
    with torch.no_grad():  # the training forward, as RLModule computes it (packed rows, k15.rl.batch)
        lp = token_logprobs(model, ids, mask, [p for row in pixels for p in row])
    worst = 0.0
    for i, (r, t) in enumerate(zip(refs, sampled.tokens)):
        got, want = torch.tensor(sampled.logprobs[i]), lp[i, len(r): len(r) + len(t)]
        torch.testing.assert_close(got, want, atol=1e-4, rtol=0)
        worst = max(worst, float((got - want).abs().max()))
    print(f"{family}: greedy tokens identical ({sum(map(len, expected))} tokens); max log-prob difference {worst:.2e}")
