"""RL prompt sets: JSONL rows of {id, prompt, answer, difficulty, domain} (+ optional images, tests, pass_rate).

The synthetic world writes its prompt set in this schema, and a user's file of MATH or AIME problems
loads through the same code. A malformed row fails with file:line and the field at fault.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import lightning as L
from torch.utils.data import DataLoader

from k15.config import WorldConfig
from k15.data.resumable import resumable_loader
from k15.errors import DataError
from k15.synthetic.arithmetic import sample_problems
from k15.synthetic.corpus import world_levels


@dataclass(frozen=True)
class PromptRecord:
    id: str
    prompt: str
    answer: str
    difficulty: int
    domain: str
    images: tuple[str, ...] = ()
    tests: tuple = ()
    pass_rate: float | None = None  # from a curation pass, when the set has one
    extra: dict = field(default_factory=dict, compare=False, hash=False)


REQUIRED = {"id": str, "prompt": str, "answer": str, "difficulty": int, "domain": str}


def parse_row(row: object, where: str) -> PromptRecord:
    if not isinstance(row, dict):
        raise DataError(f"{where}: a row must be a JSON object")
    for key, kind in REQUIRED.items():
        if key not in row:
            raise DataError(f"{where}: field '{key}' is missing")
        value = row[key]
        if not isinstance(value, kind) or isinstance(value, bool):
            raise DataError(f"{where}: field '{key}' must be {kind.__name__}, got {type(value).__name__}")
    if not row["answer"].strip():
        raise DataError(f"{where}: field 'answer' is empty")
    images = row.get("images", [])
    if not isinstance(images, list) or not all(isinstance(i, str) for i in images):
        raise DataError(f"{where}: field 'images' must be a list of paths")
    tests = row.get("tests", [])
    if not isinstance(tests, list):
        raise DataError(f"{where}: field 'tests' must be a list")
    pass_rate = row.get("pass_rate")
    if pass_rate is not None and not (isinstance(pass_rate, (int, float)) and 0.0 <= pass_rate <= 1.0):
        raise DataError(f"{where}: field 'pass_rate' must be a number in [0, 1]")
    known = set(REQUIRED) | {"images", "tests", "pass_rate"}
    return PromptRecord(
        id=row["id"], prompt=row["prompt"], answer=row["answer"], difficulty=row["difficulty"],
        domain=row["domain"], images=tuple(images), tests=tuple(tests),
        pass_rate=None if pass_rate is None else float(pass_rate),
        extra={k: v for k, v in row.items() if k not in known},
    )


def read_prompt_set(path: str | Path) -> list[PromptRecord]:
    path = Path(path)
    if not path.is_file():
        raise DataError(f"prompt set not found: {path}")
    records: list[PromptRecord] = []
    seen: dict[str, int] = {}
    with path.open(encoding="utf-8") as f:
        for line_no, line in enumerate(f, 1):
            if not line.strip():
                continue
            where = f"{path}:{line_no}"
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{where}: not valid JSON ({exc.msg})") from None
            record = parse_row(row, where)
            if record.images:  # relative image paths are relative to the prompt file
                record = replace(record, images=tuple(str(path.resolve().parent / i) for i in record.images))
            if record.id in seen:
                raise DataError(f"{where}: field 'id' repeats '{record.id}' from line {seen[record.id]}")
            seen[record.id] = line_no
            records.append(record)
    if not records:
        raise DataError(f"{path}: no prompts")
    return records


def write_prompt_set(records: list[PromptRecord], path: str | Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as f:
        for r in records:
            row = {k: v for k, v in asdict(r).items() if k != "extra"}
            row["images"], row["tests"] = list(r.images), list(r.tests)
            if row["pass_rate"] is None:
                del row["pass_rate"]
            f.write(json.dumps({**row, **r.extra}) + "\n")


def synthetic_prompt_set(world: WorldConfig, n: int, seed: int) -> list[PromptRecord]:
    """`n` distinct training-split arithmetic prompts, difficulty = level."""
    problems = sample_problems(n, "train", world_levels(world), world.heldout_fraction, seed + 2, distinct=True)
    return [PromptRecord(p.id, p.prompt, p.answer, p.level, "arithmetic") for p in problems]


class PromptDataModule(L.LightningDataModule):
    """The RL prompt set. Its loader yields only iteration numbers: the RLModule draws the prompts
    itself at the start of each iteration, so the sampler sees the latest success rates and its
    state is checkpointed with the module (a prefetching DataLoader would draw one iteration early).
    """

    def __init__(self, world: WorldConfig, path: str | None, num_prompts: int, iterations: int, seed: int):
        super().__init__()
        self.world, self.path, self.num_prompts, self.iterations, self.seed = world, path, num_prompts, iterations, seed
        self.records: list[PromptRecord] | None = None

    def setup(self, stage: str | None = None) -> None:
        if self.records is None:
            self.records = read_prompt_set(self.path) if self.path else synthetic_prompt_set(self.world, self.num_prompts, self.seed)

    def train_dataloader(self) -> DataLoader:
        # One item per iteration (the module counts iterations itself); after a resume the
        # iterations already done are skipped, and the loader's length stays the whole run.
        return resumable_loader(list(range(self.iterations)), 1, self.seed, self.trainer, shuffle=False, drop_last=False)
