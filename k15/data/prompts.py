"""RL and evaluation prompt sets, from the files researchers have, through one field mapping.

A prompt set is JSONL, Parquet, or a `datasets.save_to_disk` directory (k15.data.tables). Each row
becomes a PromptRecord through a FieldMap (the `data.*` section of the config):

    prompt       data.prompt_field (required): e.g. `problem` (MATH), `question` (GSM8K)
    answer       data.answer_field (required), read by data.answer_from: `none` (as is), `gsm8k` (the
                 value after `####`), `boxed` (the last \\boxed{} of a MATH solution). Rows where it
                 finds no answer are dropped and counted; above data.max_missing_answers the set is refused.
    id           data.id_field (optional): else a hash of the prompt text
    difficulty   data.difficulty_field (optional): an integer, or a text holding one ("Level 3");
                 curriculum sampling needs it, prioritized sampling does not
    domain       data.domain_field (optional): picks the verifier; else data.default_domain
    images       data.image_field (optional, `images` by default; `image` in many chart QA sets): one
                 image or a list of them, in reading order. An image is a path (relative to the prompt
                 file, or absolute), a `datasets` Image struct {"bytes", "path"} as Parquet files and
                 save_to_disk directories hold them (the bytes if any, else the path), or raw bytes.
                 Embedded bytes stay in memory (EmbeddedImage): nothing is written at read time.
    tests, pass_rate   optional, under these names; other fields are kept in `extra`, where
                 an `answer_format` field sets how the math verifier reads that prompt's responses
                 (else `rewards.math.answer_format`, `auto` by default: k15.rewards.answers)

Images and `<image>` markers: a prompt shows each image where its marker sits. A prompt with images
but no marker gets one marker per image put before its text ("<image><image>Which is larger?");
a prompt whose marker count differs from its image count is refused. Every image is opened and
checked when the set is read (PIL's verify: the header, and every chunk's checksum for PNG), so a
missing or broken image fails before training starts; the pixels are decoded at rollout.

The synthetic world writes its prompt set in k15's own names, which the default mapping reads as
they are. A malformed row fails with its file and line (or row) and the field at fault, in one line.
write_prompt_set writes embedded images as files beside the JSONL (images/<id>-<j>.<ext>).
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import sys
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import lightning as L
from PIL import Image
from torch.utils.data import DataLoader

from k15.config import DataConfig, WorldConfig
from k15.data.resumable import resumable_loader
from k15.data.tables import read_rows, write_jsonl
from k15.errors import DataError
from k15.models.vlm import IMAGE_TOKEN
from k15.rewards.answers import gold_answer
from k15.synthetic.arithmetic import sample_problems
from k15.synthetic.corpus import world_levels


@dataclass(frozen=True)
class EmbeddedImage:
    """An image that came inside the prompt file (a datasets Image struct's bytes, a binary column),
    kept encoded. Equal bytes are the same image, whatever the name."""

    data: bytes = field(repr=False)
    name: str = field(default="", compare=False)  # the struct's original path, for messages only

    def __str__(self) -> str:
        named = f" '{self.name}'" if self.name else ""
        return f"embedded image{named} ({len(self.data)} bytes)"


ImageRef = str | EmbeddedImage  # a path (absolute once read) or embedded bytes


def open_image(image: ImageRef) -> Image.Image:
    """PIL's lazy open of a path or of embedded bytes: the header is read, the pixels are not."""
    return Image.open(image) if isinstance(image, str) else Image.open(io.BytesIO(image.data))


@dataclass(frozen=True)
class PromptRecord:
    id: str
    prompt: str
    answer: str
    difficulty: int | None
    domain: str
    images: tuple[ImageRef, ...] = ()  # one per <image> marker of `prompt`, in order
    tests: tuple = ()
    pass_rate: float | None = None  # from a curation pass, when the set has one
    extra: dict = field(default_factory=dict, compare=False, hash=False)


@dataclass(frozen=True)
class FieldMap:
    """Which of a file's fields hold k15's prompt fields (the `data.*` config keys of the same names)."""

    prompt: str = "prompt"
    answer: str = "answer"
    answer_from: str = "none"
    id: str = "id"
    difficulty: str = "difficulty"
    domain: str = "domain"
    default_domain: str = "math"
    max_missing_answers: float = 0.05
    image: str = "images"

    @classmethod
    def from_config(cls, d: DataConfig) -> FieldMap:
        return cls(d.prompt_field, d.answer_field, d.answer_from, d.id_field, d.difficulty_field, d.domain_field,
                   d.default_domain, d.max_missing_answers, d.image_field)

    def key(self, name: str) -> str:
        """How the user sets the field `name` maps (for error messages)."""
        mapped = ("prompt", "answer", "id", "difficulty", "domain", "image")
        return f"data.{name}_field" if name in mapped else f"data.{name}"


OPTIONAL = ("tests", "pass_rate")


def _text(value: object, where: str, name: str, fields: FieldMap) -> str:
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise DataError(f"{where}: field '{getattr(fields, name)}' ({fields.key(name)}) must be text, "
                        f"got {type(value).__name__}")
    return str(value)


def _difficulty(value: object, where: str, fields: FieldMap) -> int | None:
    """An integer label, or the one integer inside a text label such as MATH's "Level 3". A text without
    a number (MATH has a few "Level ?") is no label: the curriculum counts and refuses such prompts."""
    if value is None:
        return None
    if isinstance(value, float) and value.is_integer():  # a Parquet column with nulls reads as floats
        return int(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    numbers = re.findall(r"-?\d+", value) if isinstance(value, str) else None
    if numbers == []:
        return None
    if numbers is None or len(numbers) != 1:
        raise DataError(f"{where}: field '{fields.difficulty}' ({fields.key('difficulty')}) must be int or a text "
                        f"holding one integer, got {value!r}")
    return int(numbers[0])


def _image(item: object, j: int, where: str, fields: FieldMap) -> ImageRef:
    """Image `j` (1-based) of a row: a path, a datasets Image struct, or bytes."""
    if isinstance(item, dict) and item and set(item) <= {"bytes", "path"}:
        data, path = item.get("bytes"), item.get("path")
        if isinstance(data, (bytes, bytearray, memoryview)):
            return EmbeddedImage(bytes(data), path if isinstance(path, str) else "")
        if data is None and path is None:
            raise DataError(f"{where}: image {j} of field '{fields.image}' has neither bytes nor a path")
        if data is not None:
            raise DataError(f"{where}: image {j} of field '{fields.image}' has 'bytes' of type {type(data).__name__}")
        item = path  # a struct without bytes points at a file, like a plain path
    if isinstance(item, str) and item.strip():
        return item
    if isinstance(item, (bytes, bytearray, memoryview)):
        return EmbeddedImage(bytes(item))
    got = "an empty path" if isinstance(item, str) else type(item).__name__
    raise DataError(f"{where}: field '{fields.image}' ({fields.key('image')}) must hold image paths, datasets Image "
                    f"structs {{bytes, path}} or bytes, got {got} (image {j})")


def _images(row: dict, where: str, fields: FieldMap) -> tuple[ImageRef, ...]:
    """A row's images in reading order: none (no field, a null), one, or a list."""
    value = row.get(fields.image)
    if value is None:
        return ()
    items = value if isinstance(value, (list, tuple)) else [value]
    return tuple(_image(item, j, where, fields) for j, item in enumerate(items, 1))


def _declares_images(row: dict, fields: FieldMap) -> bool:
    """The row has the image field (maybe empty), or images under another name (a mapping slip): its
    <image> markers are then placeholders that must match images, not text."""
    return fields.image in row or any(str(k).lower() in ("image", "images") for k in row)


def _with_markers(prompt: str, n_images: int, row: dict, where: str, fields: FieldMap) -> str:
    """The prompt with one <image> marker per image: as written, or all put before the text when it has none."""
    found = prompt.count(IMAGE_TOKEN)
    if found == n_images:
        return prompt
    if found == 0:
        return IMAGE_TOKEN * n_images + prompt
    hint = "" if fields.image in row else (f"; there is no field '{fields.image}' (set {fields.key('image')}; the row "
                                           f"has: {', '.join(sorted(map(str, row))[:8])})")
    raise DataError(f"{where}: the prompt has {found} {IMAGE_TOKEN} placeholders but {n_images} images "
                    f"(field '{fields.image}'){hint}")


def parse_row(row: object, where: str, fields: FieldMap = FieldMap()) -> PromptRecord | None:
    """The record of one row; None when `answer_from` finds no gold answer in it (the caller counts these)."""
    if not isinstance(row, dict):
        raise DataError(f"{where}: a row must be an object with named fields")
    for name in ("prompt", "answer"):
        if getattr(fields, name) not in row:
            present = ", ".join(sorted(map(str, row))[:8])
            raise DataError(f"{where}: field '{getattr(fields, name)}' is missing (set {fields.key(name)}; "
                            f"the row has: {present})")
    prompt = _text(row[fields.prompt], where, "prompt", fields)
    if not prompt.strip():
        raise DataError(f"{where}: field '{fields.prompt}' is empty")
    raw_answer = row[fields.answer]
    if fields.answer_from == "none" and raw_answer is not None and not _text(raw_answer, where, "answer", fields).strip():
        raise DataError(f"{where}: field '{fields.answer}' is empty")
    if raw_answer is None:  # a null in a Parquet column: no gold answer, counted like one answer_from cannot find
        return None
    answer = gold_answer(_text(raw_answer, where, "answer", fields), fields.answer_from)
    if answer is None:
        return None
    images = _images(row, where, fields)
    if images or _declares_images(row, fields):  # a text row keeps a literal <image> as written
        prompt = _with_markers(prompt, len(images), row, where, fields)
    tests = row.get("tests") or []
    if not isinstance(tests, list):
        raise DataError(f"{where}: field 'tests' must be a list")
    pass_rate = row.get("pass_rate")
    if pass_rate is not None and not (isinstance(pass_rate, (int, float)) and 0.0 <= pass_rate <= 1.0):
        raise DataError(f"{where}: field 'pass_rate' must be a number in [0, 1]")
    record_id = row.get(fields.id)
    record_id = _text(record_id, where, "id", fields) if record_id is not None else ""
    domain = row.get(fields.domain)
    domain = _text(domain, where, "domain", fields) if domain is not None else fields.default_domain
    mapped = {fields.prompt, fields.answer, fields.id, fields.difficulty, fields.domain, fields.image, *OPTIONAL}
    extra = {k: v for k, v in row.items() if k not in mapped}
    return PromptRecord(
        id=record_id, prompt=prompt, answer=answer, difficulty=_difficulty(row.get(fields.difficulty), where, fields),
        domain=domain, images=images, tests=tuple(tests),
        pass_rate=None if pass_rate is None else float(pass_rate), extra=extra,
    )


def _failure(exc: BaseException) -> str:
    """Why an image cannot be read, in a few words (the path is said once, by the caller)."""
    if isinstance(exc, FileNotFoundError):
        return "no such file"
    if isinstance(exc, IsADirectoryError):
        return "a directory, not a file"
    if isinstance(exc, PermissionError):
        return "permission denied"
    if isinstance(exc, Image.UnidentifiedImageError):
        return "not an image PIL can decode"
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__  # PIL's own words: "broken PNG file", "Truncated File Read"


def check_images(record: PromptRecord, where: str, fields: FieldMap = FieldMap()) -> None:
    """Open and decode every image of a record (PIL's verify() reads no JPEG data, so a cut-short JPEG would
    pass it and fail mid-run); the first bad one is a DataError naming the row."""
    for j, image in enumerate(record.images, 1):
        try:
            with open_image(image) as opened:
                opened.verify()  # PNG checksums (a cut-off end still loads)
            with open_image(image) as opened:
                opened.load()  # the pixel data (verify() reads none of a JPEG's)
        except Exception as exc:  # PIL raises OSError, SyntaxError, ValueError, ... for damaged data
            raise DataError(f"{where}: prompt {record.id}: cannot read image {j} of field '{fields.image}', "
                            f"{image}: {_failure(exc)}") from None


def prompt_hash(prompt: str) -> str:
    return "p" + hashlib.sha1(prompt.encode("utf-8")).hexdigest()[:12]


def _position(where: str, path: Path) -> str:
    """'line 3' of 'FILE:3', 'row 3' of 'FILE row 3'."""
    rest = where[len(str(path)):]
    return f"line {rest[1:]}" if rest.startswith(":") else rest.strip()


def read_prompt_set(path: str | Path, fields: FieldMap = FieldMap(), what: str = "prompt set") -> list[PromptRecord]:
    """Every usable row of a prompt file; `what` names the config key in errors (e.g. rl.prompt_path)."""
    path = Path(path)
    rows = read_rows(path, what)
    base = path.resolve() if path.is_dir() else path.resolve().parent  # relative image paths start here
    records: list[PromptRecord] = []
    seen: dict[str, str] = {}
    missing: list[str] = []
    for where, row in rows:
        record = parse_row(row, where, fields)
        if record is None:
            missing.append(where)
            continue
        if record.images:  # paths start at the prompt file (an absolute one stays as it is)
            record = replace(record, images=tuple(str(base / i) if isinstance(i, str) else i for i in record.images))
        if not record.id:  # a stable id from the text; a repeated text gets a numbered id
            record_id, n = prompt_hash(record.prompt), 1
            while record_id in seen:
                n += 1
                record_id = f"{prompt_hash(record.prompt)}-{n}"
            record = replace(record, id=record_id)
        elif record.id in seen:
            raise DataError(f"{where}: field '{fields.id}' repeats '{record.id}' from {seen[record.id]}")
        seen[record.id] = _position(where, path)
        check_images(record, where, fields)
        records.append(record)
    if missing:
        share = len(missing) / len(rows)
        said = (f"{path}: data.answer_from={fields.answer_from} found no gold answer in field '{fields.answer}' of "
                f"{len(missing)} of {len(rows)} rows (first: {missing[0]})")
        if share > fields.max_missing_answers:
            raise DataError(f"{said}; that is more than data.max_missing_answers={fields.max_missing_answers:g}")
        print(f"{said}; those rows are left out", file=sys.stderr)
    if not records:
        raise DataError(f"{path}: no prompts")
    return records


def write_prompt_set(records: list[PromptRecord], path: str | Path) -> None:
    """JSONL in k15's own field names, which the default FieldMap reads back as they are. Embedded
    images become files beside it, images/<id>-<j>.<ext>, under their relative paths. A record's
    other fields come along where JSON can hold them (not image bytes or timestamps), and never
    overwrite the mapped ones (a raw `answer` column beside the mapped `solution`)."""
    path = Path(path)
    rows, taken = [], set()
    for r in records:
        row = asdict(replace(r, images=(), extra={}))  # (asdict would copy every image's bytes)
        del row["extra"]
        row["images"] = [i if isinstance(i, str) else _write_image(i, r.id, j, path.parent, taken)
                         for j, i in enumerate(r.images)]
        row["tests"] = list(r.tests)
        if row["pass_rate"] is None:
            del row["pass_rate"]
        rows.append({**row, **{k: v for k, v in r.extra.items() if k not in row and _jsonable(v)}})
    write_jsonl(rows, path)


def _write_image(image: EmbeddedImage, record_id: str, j: int, out_dir: Path, taken: set[str]) -> str:
    """Write the bytes as they are (no re-encoding: equal pixels) to images/<id>-<j>.<ext>; the relative path."""
    try:
        with open_image(image) as opened:
            kind = opened.format
    except Exception:  # as when reading: PIL raises many kinds for data it cannot decode
        kind = None
    if kind is None:
        raise DataError(f"prompt {record_id}: cannot write {image} to {out_dir / 'images'}: "
                        "not an image PIL can decode")
    suffix = {"JPEG": "jpg", "TIFF": "tif"}.get(kind, kind.lower())
    stem = re.sub(r"[^A-Za-z0-9._-]", "_", f"{record_id}-{j}")  # an id may hold characters a file name cannot
    name, n = f"{stem}.{suffix}", 1
    while name in taken:  # two ids that differ only in such characters
        n += 1
        name = f"{stem}_{n}.{suffix}"
    taken.add(name)
    (out_dir / "images").mkdir(parents=True, exist_ok=True)
    (out_dir / "images" / name).write_bytes(image.data)
    return f"images/{name}"


def _jsonable(value: object) -> bool:
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return False
    return True


def synthetic_prompt_set(world: WorldConfig, n: int, seed: int) -> list[PromptRecord]:
    """`n` distinct training-split arithmetic prompts, difficulty = level."""
    problems = sample_problems(n, "train", world_levels(world), world.heldout_fraction, seed + 2, distinct=True)
    return [PromptRecord(p.id, p.prompt, p.answer, p.level, "arithmetic") for p in problems]


def freeform_prompt_set(n: int, split: str, levels: range, heldout_fraction: float, seed: int,
                        unit_share: float = 0.5) -> list[PromptRecord]:
    """`n` free-form questions of `split` (k15.synthetic.freeform), domain freeform: the answer is the
    reference ("eight apples"), judged by the free-form checker or a learned reward model (rewards.rm)."""
    from k15.synthetic.freeform import sample_freeform

    return [PromptRecord(fp.id, fp.question, fp.reference, fp.problem.level, "freeform")
            for fp in sample_freeform(n, split, levels, heldout_fraction, seed, unit_share, distinct=True)]


class PromptDataModule(L.LightningDataModule):
    """The RL prompt set. Its loader yields only iteration numbers: the RLModule draws the prompts
    itself at the start of each iteration, so the sampler sees the latest success rates and its
    state is checkpointed with the module (a prefetching DataLoader would draw one iteration early).
    """

    def __init__(self, world: WorldConfig, path: str | None, num_prompts: int, iterations: int, seed: int,
                 fields: FieldMap = FieldMap()):
        super().__init__()
        self.world, self.path, self.num_prompts, self.iterations, self.seed = world, path, num_prompts, iterations, seed
        self.fields = fields
        self.records: list[PromptRecord] | None = None

    def setup(self, stage: str | None = None) -> None:
        if self.records is None:
            self.records = (read_prompt_set(self.path, self.fields, "rl.prompt_path") if self.path
                            else synthetic_prompt_set(self.world, self.num_prompts, self.seed))

    def train_dataloader(self) -> DataLoader:
        # One item per iteration (the module counts iterations itself); after a resume the
        # iterations already done are skipped, and the loader's length stays the whole run.
        return resumable_loader(list(range(self.iterations)), 1, self.seed, self.trainer, shuffle=False, drop_last=False)
