"""The Pillow generators of the synthetic world: deterministic, split-safe, in the tokenizer's alphabet."""

from __future__ import annotations

import random

import numpy as np
import pytest

from k15.synthetic.arithmetic import is_heldout, sample_problems
from k15.synthetic.images import GENERATORS, STRIP_CELLS, render_text, vision_docs


def fingerprint(doc) -> tuple:
    return (doc.key, doc.response, doc.answer,
            tuple(s if isinstance(s, str) else np.asarray(s).tobytes() for s in doc.segments))


@pytest.mark.parametrize("kind", list(GENERATORS))
def test_generators_are_deterministic_and_speak_the_tokenizer(kind, tok):
    a = [fingerprint(d) for d in vision_docs(kind, 6, seed=4)]
    b = [fingerprint(d) for d in vision_docs(kind, 6, seed=4)]
    c = [fingerprint(d) for d in vision_docs(kind, 6, seed=5)]
    assert a == b and a != c and len(a) == 6
    for doc in vision_docs(kind, 20, seed=4):
        assert doc.kind == kind and "." not in doc.key and doc.images
        for img in doc.images:  # sides are multiples of 16 px: whole patches of the default tower
            assert img.width % 16 == 0 and img.height % 16 == 0 and img.width * img.height <= 4096
        texts = [s for s in doc.segments if isinstance(s, str)] + [doc.response]
        for t in texts:
            assert tok.unk_token_id not in tok.encode(t, add_special_tokens=False), t


def test_problem_images_show_the_arithmetic_world_and_respect_the_split():
    train = list(vision_docs("problem", 30, "train", seed=2))
    heldout = list(vision_docs("problem", 30, "heldout", seed=2))
    expected = sample_problems(30, "train", range(1, 7), 0.1, 2)
    assert [d.meta["prompt"] for d in train] == [p.prompt for p in expected]
    assert [d.answer for d in train] == [p.answer for p in expected]
    assert all(is_heldout(d.meta["prompt"], 0.1) for d in heldout)
    assert not {d.meta["prompt"] for d in train} & {d.meta["prompt"] for d in heldout}
    for d in train:
        assert d.response.endswith(f"<answer>{d.answer}</answer>")
        image = np.asarray(d.images[0])
        assert image.shape == (16, 16 * STRIP_CELLS, 3)
    ocr_train = {d.answer for d in vision_docs("ocr", 200, "train", seed=2)}
    ocr_heldout = {d.answer for d in vision_docs("ocr", 50, "heldout", seed=2)}
    assert not ocr_train & ocr_heldout


def test_text_is_right_aligned_one_character_per_cell():
    image = np.asarray(render_text("7-2=", cells=6))
    ink = (image < 128).any(axis=2)  # dark pixels
    cells = [ink[:, 16 * i : 16 * (i + 1)].any() for i in range(6)]
    assert cells == [False, False, True, True, True, True]
    with pytest.raises(ValueError, match="has 8 characters but the strip has 6 cells"):
        render_text("12345678", cells=6)
    narrow = render_text("42", cells=14, cell_width=8)  # calibration's 8-px cells, 16x112
    assert narrow.size == (112, 16)


def test_scene_text_reads_each_cell_as_its_shape():
    from k15.synthetic.images import SCENE_LETTERS, draw_scene, scene_text

    layout: dict = {}
    objects = [("circle", "red"), ("triangle", "blue"), ("square", "green")]
    image = draw_scene(objects, random.Random(4), layout=layout)
    text = scene_text(layout)
    assert len(text) == 9 and sorted(text.replace(" ", "")) == sorted(SCENE_LETTERS[s] for s, _ in objects)
    pixels = image.load()
    for i, letter in enumerate(text):  # a cell reads blank exactly when no shape was drawn in it
        r, c = divmod(i, 3)
        inked = any(pixels[x, y] != (255, 255, 255) for x in range(c * 16, c * 16 + 16) for y in range(r * 16, r * 16 + 16))
        assert inked == (letter != " ")
    # the same rng draws the same picture with or without a layout to fill
    assert draw_scene(objects, random.Random(4)).tobytes() == image.tobytes()
