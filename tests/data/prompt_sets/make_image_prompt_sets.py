"""Writes the tiny image prompt sets next to this file (see README.md here).

    .venv/bin/python tests/data/prompt_sets/make_image_prompt_sets.py

Three layouts that vision-language prompt sets come in, each with a few rows of tiny PNGs drawn
here (simple shapes and bar charts, 32x32, 16x48 and 48x16):

    shapes_tiny.jsonl + shapes_tiny_images/   image paths relative to the file, one or several a row
    geometry_tiny.parquet                      geometry QA: problem, answer, images (embedded Image structs)
    charts_tiny_dataset/                       chart QA, datasets.save_to_disk: question, answer, image, level

Deterministic: a rerun gives the same bytes. Tests import `image(name)` to compare pixels.
"""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import datasets
from PIL import Image, ImageDraw

from k15.data.tables import write_jsonl

HERE = Path(__file__).resolve().parent
IMAGE_DIR = "shapes_tiny_images"  # the JSONL set's images, relative to it

COLOURS = {"red": (220, 40, 40), "blue": (40, 70, 220), "green": (30, 160, 60), "white": (255, 255, 255)}


def _shape(kind: str, colour: str, size: tuple[int, int]) -> Image.Image:
    """One shape filling a white canvas (width, height), drawn without anti-aliasing."""
    w, h = size
    canvas = Image.new("RGB", size, COLOURS["white"])
    draw = ImageDraw.Draw(canvas)
    box = (2, 2, w - 3, h - 3)
    fill = COLOURS[colour]
    if kind == "circle":
        draw.ellipse(box, fill=fill)
    elif kind == "triangle":
        draw.polygon([(w // 2, 2), (w - 3, h - 3), (2, h - 3)], fill=fill)
    else:  # square, bar, rectangle: the box itself
        draw.rectangle(box, fill=fill)
    return canvas


def _bars(heights: list[int], colour: str = "blue") -> Image.Image:
    """A 32x32 bar chart: bars of the given pixel heights standing on a black axis."""
    canvas = Image.new("RGB", (32, 32), COLOURS["white"])
    draw = ImageDraw.Draw(canvas)
    width = 28 // len(heights)
    for i, height in enumerate(heights):
        left = 2 + i * width
        draw.rectangle((left + 1, 30 - height, left + width - 2, 29), fill=COLOURS[colour])
    draw.line((1, 30, 30, 30), fill=(0, 0, 0))
    return canvas


# name -> how it is drawn; every fixture image is one of these
DRAWN = {
    "red_circle": lambda: _shape("circle", "red", (32, 32)),
    "blue_square": lambda: _shape("square", "blue", (32, 32)),
    "red_triangle": lambda: _shape("triangle", "red", (32, 32)),
    "green_triangle": lambda: _shape("triangle", "green", (32, 32)),
    "tall_bar": lambda: _shape("bar", "green", (16, 48)),
    "wide_rectangle": lambda: _shape("rectangle", "blue", (48, 16)),
    "small_circle": lambda: _shape("circle", "blue", (16, 16)),
    "bars_3_5_2": lambda: _bars([12, 20, 8]),
    "bars_4_4": lambda: _bars([16, 16], "green"),
    "bars_1_6_3_2": lambda: _bars([4, 24, 12, 8], "red"),
}


def image(name: str) -> Image.Image:
    return DRAWN[name]()


def png_bytes(name: str) -> bytes:
    buffer = io.BytesIO()
    image(name).save(buffer, format="PNG")
    return buffer.getvalue()


# (a) JSONL: qid, question, answer, images (a list of paths, or one path), grade (the difficulty)
SHAPES = [
    ("s1", "<image>What shape is this?", "circle", ["red_circle"], 1),
    ("s2", "Which has more corners, <image> or <image>? Answer first or second.", "second",
     ["red_triangle", "blue_square"], 2),
    ("s3", "How many of these shapes are red?", "2", ["red_circle", "blue_square", "red_triangle"], 2),  # no markers
    ("s4", "<image>How many sides does this shape have?", "3", "green_triangle", 1),  # one path, not a list
    ("s5", "<image>Is the shape taller than it is wide?", "yes", ["tall_bar"], 1),
    ("s6", "<image>Is the shape taller than it is wide?", "no", ["wide_rectangle"], 1),
]

# (b) Parquet, geometry QA layout: problem, answer (\boxed{}), images (a list of datasets Image
# structs with the bytes embedded; `path` is the original file name, or null as in many exports)
GEOMETRY = [
    ("<image>The triangle is equilateral and its perimeter is 12. Find the length of one side.",
     "\\boxed{4}", [("red_triangle", "geo_001.png")]),
    ("<image>Each side of the square is 5. Find its area.", "\\boxed{25}", [("blue_square", None)]),
    ("<image><image>The first circle has radius 2 and the second radius 1. What is the ratio of the second "
     "area to the first?", "\\boxed{\\frac{1}{4}}", [("red_circle", "geo_003a.png"), ("small_circle", "geo_003b.png")]),
    ("The rectangle is 48 by 16. Find its perimeter.", "\\boxed{128}", [("wide_rectangle", None)]),  # no marker
]

# (c) datasets.save_to_disk, chart QA layout: question, answer, image (one Image a row), level
CHARTS = [
    ("Which bar is the tallest: the first, second or third?", "second", "bars_3_5_2", 1),
    ("How many bars are there?", "4", "bars_1_6_3_2", 1),
    ("Are the two bars the same height?", "yes", "bars_4_4", 1),
    ("How many pixels taller is the second bar than the first?", "8", "bars_3_5_2", 2),
]


def write_shapes(out: Path) -> None:
    shutil.rmtree(out / IMAGE_DIR, ignore_errors=True)
    (out / IMAGE_DIR).mkdir(parents=True)
    for name in sorted({n for row in SHAPES for n in ([row[3]] if isinstance(row[3], str) else row[3])}):
        (out / IMAGE_DIR / f"{name}.png").write_bytes(png_bytes(name))
    rows = []
    for qid, question, answer, names, grade in SHAPES:
        paths = f"{IMAGE_DIR}/{names}.png" if isinstance(names, str) else [f"{IMAGE_DIR}/{n}.png" for n in names]
        rows.append({"qid": qid, "question": question, "answer": answer, "images": paths, "grade": grade})
    write_jsonl(rows, out / "shapes_tiny.jsonl")


def _fixed(dataset: datasets.Dataset, fingerprint: str) -> datasets.Dataset:
    # from_dict draws a random fingerprint, which save_to_disk writes to state.json: fix it
    return datasets.Dataset(dataset.data, info=dataset.info, fingerprint=fingerprint)


def write_geometry(out: Path) -> None:
    features = datasets.Features({"problem": datasets.Value("string"), "answer": datasets.Value("string"),
                                  "images": datasets.List(datasets.Image())})
    columns = {
        "problem": [p for p, _, _ in GEOMETRY],
        "answer": [a for _, a, _ in GEOMETRY],
        "images": [[{"bytes": png_bytes(n), "path": path} for n, path in images] for _, _, images in GEOMETRY],
    }
    # to_parquet writes the schema datasets uses (list<struct<bytes, path>>) and its feature metadata
    datasets.Dataset.from_dict(columns, features=features).to_parquet(str(out / "geometry_tiny.parquet"))


def write_charts(out: Path) -> None:
    features = datasets.Features({"question": datasets.Value("string"), "answer": datasets.Value("string"),
                                  "image": datasets.Image(), "level": datasets.Value("int64")})
    columns = {
        "question": [q for q, _, _, _ in CHARTS],
        "answer": [a for _, a, _, _ in CHARTS],
        "image": [{"bytes": png_bytes(n), "path": None} for _, _, n, _ in CHARTS],
        "level": [lv for _, _, _, lv in CHARTS],
    }
    shutil.rmtree(out / "charts_tiny_dataset", ignore_errors=True)
    dataset = _fixed(datasets.Dataset.from_dict(columns, features=features), "k15-charts-tiny")
    dataset.save_to_disk(str(out / "charts_tiny_dataset"))


def main(out: Path = HERE) -> None:
    datasets.disable_progress_bars()
    write_shapes(out)
    write_geometry(out)
    write_charts(out)


if __name__ == "__main__":
    main()
