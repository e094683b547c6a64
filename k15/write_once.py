"""Derived data written once per run and shared by every process: synthetic shards, rendered prompt sets.

    write_once(RUN / "data" / "shards", {"counts": ..., "seed": 0}, lambda tmp: write_sources(tmp, ...))

Rank 0 writes into a temporary sibling directory and renames it into place, then writes a marker
holding `settings`; the other ranks wait for that marker. A directory whose marker holds other
settings (the config changed, e.g. on resume) or none (an interrupted write) is written again.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Callable

from k15.distributed import is_rank_zero
from k15.errors import K15Error

MARKER = "COMPLETE.json"


def _settings_of(directory: Path) -> dict | None:
    try:
        return json.loads((directory / MARKER).read_text())
    except (OSError, ValueError):
        return None


def write_once(directory: str | Path, settings: dict, write: Callable[[Path], object], timeout_s: float = 3600.0) -> Path:
    directory = Path(directory)
    settings = json.loads(json.dumps(settings))  # as it will read back (tuples become lists)
    if _settings_of(directory) == settings:
        return directory
    if not is_rank_zero():
        deadline = time.monotonic() + timeout_s
        while _settings_of(directory) != settings:
            if time.monotonic() > deadline:
                raise K15Error(f"waited {timeout_s:.0f} s for rank 0 to write {directory}")
            time.sleep(1.0)
        return directory
    tmp = directory.with_name(directory.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    write(tmp)
    shutil.rmtree(directory, ignore_errors=True)
    tmp.rename(directory)
    (directory / MARKER).write_text(json.dumps(settings, sort_keys=True))
    return directory
