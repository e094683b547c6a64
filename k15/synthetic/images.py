"""Vision data of the synthetic world, drawn with Pillow, deterministic by seed.

Every generator returns `VisionDoc`s: a prompt of interleaved segments (text and Pillow images, in
reading order) and a response text. Pretraining reads prompt + response as one document; SFT and
RL read the prompt and score the response against `answer` where there is one.

    problem      the arithmetic problems of k15.synthetic.arithmetic rendered as an image (text-rendered):
                 image "7-2+4-1=" -> a short or long trace (k15.synthetic.traces), answer "8"
    count        shapes on a 48x48 canvas: "how many circles? " -> "<answer>3</answer>"
    compare      "more circles or squares? " -> "<answer>circles</answer>"
    chart        a 48x64 bar chart: "which bar is tallest? " -> "<answer>red</answer>" (level 1)
                 | "how tall is the blue bar? " -> "<answer>4</answer>" (level 2)
    ocr          a random string rendered as an image -> the string
    scene        a scene of shapes -> its cells read as letters ("cs t  c  "), for the tower's reading loss
    caption      a 48x48 scene -> "a red circle and a blue square."
    interleaved  text with several images between its sentences (no response)

Text is rendered one character per cell, right-aligned (`render_text`; default 14 cells of 16x16
px, a 16x224 strip), and pictures place their objects in the cells of a 16-px grid, so with the
default 16-px patches one image token sees one character or one object. All text uses the synthetic
tokenizer's alphabet (digits, lowercase letters, ` +-*/=,;:.()?!`).

Train and held-out documents never overlap: as for arithmetic problems, a document's split is a
pure function of its content (a CRC of a canonical description).
"""

from __future__ import annotations

import random
import string
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Callable, Iterator

from PIL import Image, ImageDraw, ImageFont

from k15.errors import DataError
from k15.synthetic.arithmetic import is_heldout, sample_problems
from k15.synthetic.traces import answer_block, make_trace, text_of

CELL = 16  # px: one character cell / one object cell
STRIP_CELLS = 14  # a 16x224 strip holds the longest level-6 problem, "7-2+4-1+3-2+1="
MAX_IMAGE_LEVEL = 6  # problems with more operations do not fit the default strip
COLORS = {"red": (220, 40, 40), "green": (40, 170, 60), "blue": (40, 80, 220), "yellow": (230, 200, 30),
          "purple": (150, 60, 190), "black": (20, 20, 20)}
SHAPES = ("circle", "square", "triangle")
WHITE = (255, 255, 255)


@dataclass
class VisionDoc:
    key: str  # unique within a kind; no dots (webdataset splits file names at the first dot)
    kind: str
    segments: list[str | Image.Image]  # the prompt: text and images in reading order
    response: str = ""
    answer: str | None = None  # the verifiable answer, when there is one
    level: int | None = None  # difficulty, when there is one
    meta: dict = field(default_factory=dict)

    @property
    def images(self) -> list[Image.Image]:
        return [s for s in self.segments if isinstance(s, Image.Image)]


# ------------------------------------------------------------------------------------------------
# Drawing


@lru_cache(maxsize=None)
def _font(size: int = 10) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


def render_text(text: str, cells: int = STRIP_CELLS, cell: int = CELL, cell_width: int | None = None,
                color: tuple[int, int, int] = (0, 0, 0), background: tuple[int, int, int] = WHITE,
                font_size: int = 10) -> Image.Image:
    """`text` one character per cell, right-aligned in a strip of `cells` cells (cell x cell_width px each)."""
    cell_width = cell_width or cell
    if len(text) > cells:
        raise ValueError(f"{text!r} has {len(text)} characters but the strip has {cells} cells")
    image = Image.new("RGB", (cells * cell_width, cell), background)
    draw = ImageDraw.Draw(image)
    font = _font(font_size)
    first = cells - len(text)
    for i, ch in enumerate(text):
        if ch == " ":
            continue
        left, top, right, bottom = font.getbbox(ch)
        x = (first + i) * cell_width + (cell_width - (right - left)) // 2 - left
        y = (cell - (bottom - top)) // 2 - top
        draw.text((x, y), ch, fill=color, font=font)
    return image


def draw_shape(draw: ImageDraw.ImageDraw, shape: str, box: tuple[int, int, int, int],
               color: tuple[int, int, int]) -> None:
    x0, y0, x1, y1 = box
    if shape == "circle":
        draw.ellipse(box, fill=color)
    elif shape == "square":
        draw.rectangle(box, fill=color)
    elif shape == "triangle":
        draw.polygon([((x0 + x1) // 2, y0), (x1, y1), (x0, y1)], fill=color)
    else:
        raise ValueError(f"unknown shape {shape!r}")


def draw_scene(objects: list[tuple[str, str]], rng: random.Random, size: tuple[int, int] = (48, 48),
               layout: dict | None = None) -> Image.Image:
    """Shapes (shape, colour) in distinct cells of a 16-px grid over a `size` (height, width) canvas.

    `layout`, when given, receives {(row, col): shape} of the cells used (for the scene-reading loss).
    """
    h, w = size
    cells = [(r, c) for r in range(h // CELL) for c in range(w // CELL)]
    if len(objects) > len(cells):
        raise ValueError(f"{len(objects)} objects do not fit {len(cells)} cells")
    image = Image.new("RGB", (w, h), WHITE)
    draw = ImageDraw.Draw(image)
    for (shape, color), (r, c) in zip(objects, rng.sample(cells, len(objects))):
        side = rng.randint(9, 12)
        x0 = c * CELL + rng.randint(1, CELL - side - 1)
        y0 = r * CELL + rng.randint(1, CELL - side - 1)
        draw_shape(draw, shape, (x0, y0, x0 + side, y0 + side), COLORS[color])
        if layout is not None:
            layout[(r, c)] = shape
    return image


SCENE_LETTERS = {"circle": "c", "square": "s", "triangle": "t"}  # what a scene cell "reads" as; empty: " "


def scene_text(layout: dict, size: tuple[int, int] = (48, 48)) -> str:
    """A scene's cells in reading order as letters (c / s / t, blank for an empty cell): one per image token."""
    h, w = size
    return "".join(SCENE_LETTERS[layout[(r, c)]] if (r, c) in layout else " "
                   for r in range(h // CELL) for c in range(w // CELL))


def draw_bars(values: list[int], colors: list[str], height: int = 48, unit: int = 8) -> Image.Image:
    """A bar chart: bar i is `values[i] * unit` px tall in column i (16 px wide), light grid lines every unit."""
    width = CELL * len(values)
    image = Image.new("RGB", (width, height), WHITE)
    draw = ImageDraw.Draw(image)
    for y in range(height - 1, -1, -unit):
        draw.line([(0, y), (width - 1, y)], fill=(215, 215, 215))
    for i, (v, color) in enumerate(zip(values, colors)):
        draw.rectangle((i * CELL + 3, height - 1 - v * unit, i * CELL + CELL - 4, height - 1), fill=COLORS[color])
    return image


# ------------------------------------------------------------------------------------------------
# Generators


def _split_stream(make: Callable[[random.Random], tuple[str, VisionDoc]], n: int, split: str,
                  heldout_fraction: float, rng: random.Random) -> Iterator[VisionDoc]:
    """Draw documents until `n` of `split` came out (split by a CRC of each one's canonical text)."""
    if split not in ("train", "heldout"):
        raise ValueError(f"split must be 'train' or 'heldout', got {split!r}")
    made, attempts = 0, 0
    while made < n and attempts < 200 * n + 10_000:
        attempts += 1
        canonical, doc = make(rng)
        if is_heldout(canonical, heldout_fraction) == (split == "heldout"):
            made += 1
            yield doc


def check_image_levels(levels: range) -> None:
    """Problems of more operations than MAX_IMAGE_LEVEL do not fit the default strip: a DataError, not a cut."""
    if levels and max(levels) > MAX_IMAGE_LEVEL:
        raise DataError(f"image problems fit levels up to {MAX_IMAGE_LEVEL} (a {STRIP_CELLS}-cell strip); "
                        f"world.max_level asks for level {max(levels)}")


def problem_image(prompt: str, cells: int = STRIP_CELLS, cell: int = CELL) -> Image.Image:
    """An arithmetic prompt ("7-2+4-1=") as the image a vision prompt shows."""
    return render_text(prompt, cells=cells, cell=cell)


def problem_docs(n: int, split: str = "train", seed: int = 0, heldout_fraction: float = 0.1,
                 levels: range = range(1, 7), long_fraction: float = 0.5, cells: int = STRIP_CELLS,
                 cell: int = CELL, distinct: bool = False) -> Iterator[VisionDoc]:
    """Text-rendered problems: the image shows the prompt; the response is a short or long trace."""
    check_image_levels(levels)
    rng = random.Random(f"problem/{split}/{seed}")
    for i, p in enumerate(sample_problems(n, split, levels, heldout_fraction, seed, distinct=distinct)):
        style = "long" if rng.random() < long_fraction else "short"
        yield VisionDoc(f"problem-{split}-{seed}-{i:07d}", "problem", [problem_image(p.prompt, cells, cell)],
                        text_of(make_trace(p, style, rng)), answer=p.answer, level=p.level,
                        meta={"prompt": p.prompt, "style": style})


def count_docs(n: int, split: str = "train", seed: int = 0, heldout_fraction: float = 0.1) -> Iterator[VisionDoc]:
    """How many shapes of one kind, among 1-7 shapes; level = number of shapes."""
    counter = iter(range(10**9))

    def make(rng: random.Random) -> tuple[str, VisionDoc]:
        target = rng.choice(SHAPES)
        objects = [(rng.choice(SHAPES), rng.choice(list(COLORS))) for _ in range(rng.randint(1, 7))]
        count = sum(1 for s, _ in objects if s == target)
        scene_seed = rng.random()
        image = draw_scene(objects, random.Random(scene_seed))
        canonical = f"count/{target}/{sorted(objects)}"  # the question and what is shown, not where: a held-out scene is new
        doc = VisionDoc(f"count-{split}-{seed}-{next(counter):07d}", "count", [image, f"how many {target}s? "],
                        answer_block(str(count)), answer=str(count), level=len(objects))
        return canonical, doc

    yield from _split_stream(make, n, split, heldout_fraction, random.Random(f"count/{seed}"))


def compare_docs(n: int, split: str = "train", seed: int = 0, heldout_fraction: float = 0.1) -> Iterator[VisionDoc]:
    """Which of two kinds of shapes there are more of (never a tie); level = total shapes."""
    counter = iter(range(10**9))

    def make(rng: random.Random) -> tuple[str, VisionDoc]:
        a, b = rng.sample(SHAPES, 2)
        na, nb = rng.sample(range(0, 5), 2)
        objects = [(a, rng.choice(list(COLORS))) for _ in range(na)]
        objects += [(b, rng.choice(list(COLORS))) for _ in range(nb)]
        rng.shuffle(objects)
        scene_seed = rng.random()
        image = draw_scene(objects, random.Random(scene_seed))
        answer = f"{a}s" if na > nb else f"{b}s"
        doc = VisionDoc(f"compare-{split}-{seed}-{next(counter):07d}", "compare", [image, f"more {a}s or {b}s? "],
                        answer_block(answer), answer=answer, level=na + nb)
        return f"compare/{a}/{b}/{sorted(objects)}", doc

    yield from _split_stream(make, n, split, heldout_fraction, random.Random(f"compare/{seed}"))


def chart_docs(n: int, split: str = "train", seed: int = 0, heldout_fraction: float = 0.1) -> Iterator[VisionDoc]:
    """Read a bar chart of 4 coloured bars (values 1-5): the tallest bar's colour, or one bar's value."""
    counter = iter(range(10**9))
    palette = ["red", "green", "blue", "yellow", "purple"]

    def make(rng: random.Random) -> tuple[str, VisionDoc]:
        colors = rng.sample(palette, 4)
        values = rng.sample(range(1, 6), 4)  # distinct, so the tallest bar is unique
        image = draw_bars(values, colors)
        if rng.random() < 0.5:
            question, answer = "which bar is tallest? ", colors[values.index(max(values))]
        else:
            i = rng.randrange(4)
            question, answer = f"how tall is the {colors[i]} bar? ", str(values[i])
        doc = VisionDoc(f"chart-{split}-{seed}-{next(counter):07d}", "chart", [image, question],
                        answer_block(answer), answer=answer, level=1 if question.startswith("which") else 2, meta={"values": values, "colors": colors})
        return f"chart/{colors}/{values}/{question}", doc

    yield from _split_stream(make, n, split, heldout_fraction, random.Random(f"chart/{seed}"))


OCR_ALPHABET = string.digits + string.ascii_lowercase + "+-=.,:?!()"


def ocr_docs(n: int, split: str = "train", seed: int = 0, heldout_fraction: float = 0.1,
             cells: int = STRIP_CELLS, cell: int = CELL) -> Iterator[VisionDoc]:
    """A random string of 1-`cells` characters as an image; the response reads it."""
    counter = iter(range(10**9))

    def make(rng: random.Random) -> tuple[str, VisionDoc]:
        text = "".join(rng.choice(OCR_ALPHABET) for _ in range(rng.randint(1, cells)))
        doc = VisionDoc(f"ocr-{split}-{seed}-{next(counter):07d}", "ocr", [render_text(text, cells, cell)], text,
                        answer=text, level=len(text))
        return f"ocr/{text}", doc

    yield from _split_stream(make, n, split, heldout_fraction, random.Random(f"ocr/{seed}"))


def scene_docs(n: int, split: str = "train", seed: int = 0, heldout_fraction: float = 0.1) -> Iterator[VisionDoc]:
    """A 48x48 scene of 1-9 shapes; the response reads its cells (scene_text), like OCR reads a strip."""
    counter = iter(range(10**9))

    def make(rng: random.Random) -> tuple[str, VisionDoc]:
        objects = [(rng.choice(SHAPES), rng.choice(list(COLORS))) for _ in range(rng.randint(1, 9))]
        scene_seed = rng.random()
        layout: dict = {}
        image = draw_scene(objects, random.Random(scene_seed), layout=layout)
        text = scene_text(layout)
        doc = VisionDoc(f"scene-{split}-{seed}-{next(counter):07d}", "scene", [image], text, answer=text,
                        level=len(objects))
        return f"scene/{objects}/{scene_seed}", doc

    yield from _split_stream(make, n, split, heldout_fraction, random.Random(f"scene/{seed}"))


def _describe(objects: list[tuple[str, str]]) -> str:
    return " and ".join(f"a {color} {shape}" for shape, color in objects) + "."


def caption_docs(n: int, split: str = "train", seed: int = 0, heldout_fraction: float = 0.1) -> Iterator[VisionDoc]:
    """A scene of one or two coloured shapes and its caption."""
    counter = iter(range(10**9))

    def make(rng: random.Random) -> tuple[str, VisionDoc]:
        objects = [(rng.choice(SHAPES), rng.choice(list(COLORS))) for _ in range(rng.randint(1, 2))]
        scene_seed = rng.random()
        caption = _describe(objects)
        doc = VisionDoc(f"caption-{split}-{seed}-{next(counter):07d}", "caption",
                        [draw_scene(objects, random.Random(scene_seed))], caption)
        return f"caption/{objects}/{scene_seed}", doc

    yield from _split_stream(make, n, split, heldout_fraction, random.Random(f"caption/{seed}"))


def interleaved_docs(n: int, split: str = "train", seed: int = 0, heldout_fraction: float = 0.1) -> Iterator[VisionDoc]:
    """Documents of 2-3 parts, each a sentence, an image and a sentence about it."""
    counter = iter(range(10**9))

    def part(rng: random.Random) -> list[str | Image.Image]:  # sums come from the training split only
        kind = rng.choice(["scene", "sum", "chart"])
        if kind == "scene":
            objects = [(rng.choice(SHAPES), rng.choice(list(COLORS))) for _ in range(rng.randint(1, 3))]
            return ["here is a picture: ", draw_scene(objects, rng), f" it shows {_describe(objects)} "]
        if kind == "sum":
            p = sample_problems(1, "train", range(1, 4), heldout_fraction, rng.randrange(10**9))[0]
            return ["a sum: ", problem_image(p.prompt), f" equals {p.answer}. "]
        colors, values = rng.sample(["red", "green", "blue", "yellow"], 4), rng.sample(range(1, 6), 4)
        tallest = colors[values.index(max(values))]
        return ["a chart: ", draw_bars(values, colors), f" the {tallest} bar is tallest. "]

    def make(rng: random.Random) -> tuple[str, VisionDoc]:
        part_seed = rng.random()
        part_rng = random.Random(part_seed)
        segments = [s for _ in range(rng.randint(2, 3)) for s in part(part_rng)]
        doc = VisionDoc(f"interleaved-{split}-{seed}-{next(counter):07d}", "interleaved", segments)
        return f"interleaved/{part_seed}/{len(segments)}", doc

    yield from _split_stream(make, n, split, heldout_fraction, random.Random(f"interleaved/{seed}"))


GENERATORS: dict[str, Callable[..., Iterator[VisionDoc]]] = {
    "problem": problem_docs,
    "count": count_docs,
    "compare": compare_docs,
    "chart": chart_docs,
    "ocr": ocr_docs,
    "scene": scene_docs,
    "caption": caption_docs,
    "interleaved": interleaved_docs,
}


def vision_docs(kind: str, n: int, split: str = "train", seed: int = 0, **kwargs) -> Iterator[VisionDoc]:
    """`n` documents of one kind (a key of GENERATORS)."""
    if kind not in GENERATORS:
        raise ValueError(f"unknown vision data kind {kind!r}; kinds: {', '.join(GENERATORS)}")
    return GENERATORS[kind](n, split=split, seed=seed, **kwargs)
