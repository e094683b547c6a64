"""Checkpoint files written atomically, and read with errors that name the file.

A checkpoint is written to a temporary name beside its target and renamed over it, so a run killed
during a save leaves the previous checkpoint whole. A truncated or corrupt file fails to load with
a one-line CheckpointError naming it.

A test hook, inert unless set: K15_TEST_SAVE_PAUSE_S=SECONDS waits that long between writing the
temporary file and the rename, so a test can kill the process in the middle of a save
(tests/reliability/test_resume.py).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from lightning.pytorch.plugins.io import TorchCheckpointIO

from k15.errors import CheckpointError


PAUSE = "K15_TEST_SAVE_PAUSE_S"


class AtomicCheckpointIO(TorchCheckpointIO):
    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        path = Path(path)
        tmp = path.with_name(f".{path.name}.tmp")
        super().save_checkpoint(checkpoint, tmp, storage_options)
        if os.environ.get(PAUSE):  # tests only, see above
            time.sleep(float(os.environ[PAUSE]))
        os.replace(tmp, path)

    def load_checkpoint(self, path, map_location: Any | None = None, weights_only: bool | None = None) -> dict[str, Any]:
        if not Path(path).is_file():
            raise CheckpointError(f"checkpoint not found: {path}")
        try:
            return super().load_checkpoint(path, map_location=map_location, weights_only=False)
        except Exception as exc:  # torch raises several kinds on a damaged file
            raise CheckpointError(f"cannot read checkpoint {path} (truncated or corrupt?): {type(exc).__name__}") from None
