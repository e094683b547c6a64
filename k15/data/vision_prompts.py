"""Image prompt sets: the synthetic world's image tasks as RL prompts, and their images as pixels.

    records = write_vision_prompt_set(out_dir, ["problem", "count"], n=2048, seed=0)   # PNGs + prompts.jsonl
    prompt = image_prompt(record, tok, vlm, chat)  # an ImagePrompt with expanded placeholders, for the engine
    n = image_tokens(record, vlm)                  # the tokens its images take in the prompt (length budgets)

A record's `prompt` holds one `<image>` per image, where the image sits in the text (the synthetic
tasks put it first: "<image>how many circles? "); `images` are PNG paths, relative to the prompt file
(k15.data.prompts resolves them). A user's own image prompt set goes through the same code, in any
format k15.data.prompts reads: its images are paths or embedded bytes (EmbeddedImage), both read by
load_image as RGB. Difficulty: the task's level (problem: operations; count / compare: shapes; chart:
1 for "which bar is tallest", 2 for reading a bar's height).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from PIL import Image, UnidentifiedImageError

from k15.chat import RAW, ChatFormat, image_text
from k15.data.prompts import ImageRef, PromptRecord, open_image, read_prompt_set, write_prompt_set
from k15.errors import DataError
from k15.models.vlm import IMAGE_TOKEN, expand_placeholders
from k15.rollout.vision import ImagePrompt
from k15.config import WorldConfig
from k15.synthetic.corpus import world_levels
from k15.synthetic.images import VisionDoc, problem_docs, vision_docs


def doc_prompt(doc: VisionDoc) -> str:
    """The prompt text of a synthetic image document, `<image>` where each image sits."""
    return "".join(s if isinstance(s, str) else IMAGE_TOKEN for s in doc.segments)


def task_docs(tasks: list[str], n: int, split: str, seed: int, world: WorldConfig) -> list[VisionDoc]:
    """`n` documents spread evenly over `tasks` (round robin), deterministic by seed; arithmetic
    problems of the world's levels, distinct (as the text prompt set)."""
    per_task = -(-n // len(tasks))
    hf = world.heldout_fraction
    streams = [problem_docs(per_task, split, seed, hf, levels=world_levels(world), distinct=True) if t == "problem"
               else vision_docs(t, per_task, split, seed, heldout_fraction=hf) for t in tasks]
    docs = [d for group in itertools.zip_longest(*streams) for d in group if d is not None]
    return docs[:n]


def write_vision_prompt_set(out_dir: str | Path, tasks: list[str], n: int, seed: int, world: WorldConfig | None = None,
                            split: str = "train") -> list[PromptRecord]:
    """Render `n` image prompts to OUT/images/*.png and write OUT/prompts.jsonl; returns the records as read back."""
    out_dir = Path(out_dir)
    (out_dir / "images").mkdir(parents=True, exist_ok=True)
    records = []
    for doc in task_docs(tasks, n, split, seed, world or WorldConfig()):
        paths = []
        for j, image in enumerate(doc.images):
            rel = f"images/{doc.key}-{j}.png"
            image.save(out_dir / rel)
            paths.append(rel)
        difficulty = doc.level if doc.level is not None else 1
        records.append(PromptRecord(doc.key, doc_prompt(doc), doc.answer, difficulty, "general", tuple(paths),
                                    extra={"kind": doc.kind}))
    write_prompt_set(records, out_dir / "prompts.jsonl")
    return read_prompt_set(out_dir / "prompts.jsonl")


@contextmanager
def _opened(image: ImageRef, record_id: str) -> Iterator[Image.Image]:
    """An image of a prompt (a path or embedded bytes); one that cannot be read is a DataError naming the prompt."""
    try:
        with open_image(image) as opened:
            yield opened
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError) as exc:  # SyntaxError: PIL's "broken PNG"
        raise DataError(f"prompt {record_id}: cannot read image {image}: {exc}") from None


def load_image(image: ImageRef, record_id: str) -> Image.Image:
    """The pixels of a path or of embedded bytes, as RGB."""
    with _opened(image, record_id) as opened:
        return opened.convert("RGB")


def image_prompt(record: PromptRecord, tok, vlm, chat: ChatFormat = RAW) -> ImagePrompt | list[int]:
    """The engine's prompt for a record: token ids (text-only), or ids with placeholders expanded + pixels.
    Each `<image>` is written as the model's own image text (k15.chat.image_text) before tokenizing."""
    if not record.images:
        return chat.prompt_ids(tok, record.prompt)
    ids = chat.prompt_ids(tok, record.prompt, image_text(tok, vlm))
    processor = vlm.image_processor()
    pixels = [processor(load_image(image, record.id)) for image in record.images]
    layouts = [vlm.image_tokens(p.shape[-2], p.shape[-1]) for p in pixels]
    try:
        ids = expand_placeholders(ids, vlm.image_token_id, layouts)
    except DataError as exc:
        raise DataError(f"prompt {record.id}: {exc}") from None
    return ImagePrompt(ids, [p.to(torch.float32) for p in pixels], expanded=True)


def image_tokens(record: PromptRecord, vlm) -> int:
    """Tokens of a record's images once expanded: the length of each image's `image_tokens` (a Pixtral
    checkpoint's row breaks included), from the image headers only."""
    processor = vlm.image_processor()
    total = 0
    for image in record.images:
        with _opened(image, record.id) as opened:  # the header only: no pixels decoded
            width, height = opened.size
        total += len(vlm.image_tokens(*processor.size_for(height, width)))
    return total
