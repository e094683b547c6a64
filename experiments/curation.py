"""Finding F9 (paper §2.1): RL on a prompt set with planted guessable true/false prompts vs the same set after the curation filters."""

from __future__ import annotations

import os
import random
from pathlib import Path

from k15.config import ExperimentConfig, WorldConfig
from k15.curation.dedup import dedup
from k15.curation.hack_types import hack_type
from k15.data.prompts import PromptRecord, read_prompt_set, synthetic_prompt_set, write_prompt_set
from k15.synthetic.arithmetic import sample_problems
from k15.synthetic.corpus import world_levels
from experiments._ablation import ablation_base

DATA_DIR = Path(__file__).resolve().parent.parent / "runs" / "_data" / "curation"  # runs/ is not versioned
N_CLEAN, N_PLANTED = 3200, 800  # a fifth of the uncurated set is guessable


def planted(n: int, split: str, seed: int, world: WorldConfig | None = None) -> list[PromptRecord]:
    """'7-2+4=9? true or false=' -> '1' / '0': a binary answer, right half the time by guessing alone.

    The answer is a digit, which the arithmetic model can write (this wording, ending in '=' like
    the arithmetic prompts, gets a digit answer most often from the SFT model), so RL can learn to
    guess it without computing anything. The curation's hack-type filter removes these prompts by
    their text ("true or false").
    """
    world = world or WorldConfig()
    rng = random.Random(f"curation/planted/{split}/{seed}")
    problems = sample_problems(n, split, world_levels(world), world.heldout_fraction, seed + 101, distinct=True)
    out = []
    for i, p in enumerate(problems):
        truth = rng.random() < 0.5
        shown = p.answer if truth else str(rng.choice([d for d in range(10) if str(d) != p.answer]))
        out.append(PromptRecord(f"guess/{split}/{i}", f"{p.prompt}{shown}? true or false=", "1" if truth else "0", p.level, "general"))
    return out


def prompt_sets(data_dir: Path = DATA_DIR) -> tuple[Path, Path]:
    """(uncurated, curated) JSONL prompt sets, written once (they are deterministic)."""
    uncurated, curated = data_dir / "uncurated.jsonl", data_dir / "curated.jsonl"
    if not (uncurated.is_file() and curated.is_file()):
        records = synthetic_prompt_set(WorldConfig(), N_CLEAN, seed=0) + planted(N_PLANTED, "train", seed=0)
        random.Random("curation/shuffle").shuffle(records)
        kept, _ = dedup(records)
        kept = [r for r in kept if hack_type(r) is None]  # the model-free filters of k15.curation
        for rows, path in ((records, uncurated), (kept, curated)):  # write, then rename: tests may race
            tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
            write_prompt_set(rows, tmp)
            os.replace(tmp, path)
    assert len(read_prompt_set(curated)) == N_CLEAN, "the filters should remove exactly the planted prompts"
    return uncurated, curated


def config() -> dict[str, ExperimentConfig]:
    uncurated, curated = prompt_sets()
    arms = {}
    for name, path in (("no_filter", uncurated), ("filter", curated)):
        cfg = ablation_base()
        cfg.rl.prompt_path = str(path)
        arms[name] = cfg
    return arms
