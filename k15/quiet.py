"""Keep the console for what the user needs: progress, results, and real warnings."""

from __future__ import annotations

import logging
import warnings


def quiet_libraries() -> None:
    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()  # "Loading weights" bars on every load
    for name in ("lightning.pytorch", "lightning.fabric", "lightning"):
        logging.getLogger(name).setLevel(logging.WARNING)  # GPU/TPU availability lines, cloud tips
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)")
    warnings.filterwarnings("ignore", message=r".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=r".*is smaller than the logging interval.*")  # logs still land every N steps
    warnings.filterwarnings("ignore", message=r".*configure_optimizers. returned .None.*")  # RL owns its optimizer
