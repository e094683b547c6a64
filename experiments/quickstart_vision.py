"""The whole pipeline on the tiny VLM: text pretrain + SFT, tower-only (OCR) and joint vision stages, RL on image problems."""

from k15.config import ExperimentConfig
from experiments.quickstart import config as quickstart


def config() -> ExperimentConfig:
    cfg = quickstart()
    cfg.pretrain.max_steps, cfg.sft.max_steps = 800, 300  # the text model its recorded results start from
    cfg.stages = ["pretrain", "sft", "vision_tower", "vision_joint", "rl", "eval"]
    # One image token per 16-px character cell, in the decoder's own embedding space (a softmax over
    # its character embeddings): with the OCR loss this is what lets a tiny tower learn to read
    # (../shared/calibration.md); a generic MLP projector did not within minutes.
    cfg.vlm.projector.kind = "embedding_softmax"
    # Image tasks for RL and evaluation: arithmetic shown as images, and counting shapes. Charts are
    # left out: after these few minutes of joint training the tower reads them at chance (~19%), and
    # RL on chance-level prompts is noise that cost the problems most of their gain in a calibration run.
    cfg.vlm.tasks = ["problem", "count"]
    # The tower alone, the decoder frozen: it learns to read through the OCR loss and the frozen
    # decoder's next-token loss on image documents.
    cfg.vision_tower.weights = {"synthetic": 0.6, "ocr": 0.4}
    cfg.vision_tower.ocr_weight = 1.0
    # Reading both text strips and scenes (each 16-px cell as the letter of its shape) gives the
    # decoder tokens it can count and compare, as OCR gives it digits it can add.
    cfg.vision_tower.ocr_kinds = ["ocr", "scene"]
    cfg.vision_tower.lm_weight = 0.1  # at full weight, the unread images' next-token loss drowns the reading loss
    cfg.vision_tower.max_steps = 200
    cfg.vision_tower.optim.lr = 2e-3
    # Joint: every part learns; a quarter of the tokens stay text, against forgetting.
    cfg.vision_joint.weights = {"text": 0.25, "synthetic": 0.75}
    cfg.vision_joint.weights_end = {}  # fixed shares: the tiny world is mostly image problems to learn
    cfg.vision_joint.max_steps = 340
    cfg.rl.iterations = 40
    # A chart question is 40 prompt tokens (12 of them the image): leave the answers 80 in a 128 context.
    cfg.rl.max_new_tokens = cfg.eval.max_new_tokens = 80
    cfg.eval.models = ["vision_joint", "rl"]
    return cfg
