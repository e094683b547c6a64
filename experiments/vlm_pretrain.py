"""The paper's staged VLM pretraining in miniature: language-only, tower alone, joint, cooldown, long-context activation."""

from k15.config import ExperimentConfig
from experiments.quickstart import config as quickstart


def config() -> ExperimentConfig:
    cfg = quickstart()
    cfg.vlm.projector.kind = "embedding_softmax"  # the tiny tower learns to read with the OCR loss (calibration.md)
    cfg.vlm.tasks = ["problem", "count", "compare", "chart"]
    # Stage 1 after the language-only pretrain: the tower alone (decoder frozen), then joint
    # training with the vision share raised from 10% to 30% (the k15.config defaults). Stage 2: cooldown on the
    # high-quality subset. Stage 3: long context: rows grow 128 -> 512 (4x) halfway, the RoPE base
    # is raised to 40k, 40% of rows attend over the whole row (full attention), 60% stay packed.
    cfg.vision_tower.ocr_weight = 1.0
    cfg.stages = ["pretrain", "vision_tower", "vision_joint", "cooldown", "long_context", "eval"]
    cfg.eval.models = ["vision_joint", "cooldown", "long_context"]
    return cfg
