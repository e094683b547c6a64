"""Your own vision-language model and image prompt set: k1.5 RL -> held-out eval, the model's chat template.

    python -m experiments.run vision_rl model.init_from=DIR rl.prompt_path=TRAIN eval.prompt_path=TEST

DIR: a local Qwen2.5-VL, Qwen2-VL, LLaVA or Mistral3 checkpoint (the family is read from its
config.json). TRAIN / TEST: JSONL with image paths, or Parquet / a `datasets.save_to_disk` directory
with embedded images. The defaults read geometry-QA fields (problem, answer, images; `<image>` in the
problem marks where an image sits, else the images come first); set data.prompt_field, answer_field,
image_field (e.g. `data.image_field=image`) and data.answer_from for other sets. Sizes are GPU defaults
for a 3B-7B model (`trainer=gpu`), as in math_rl; they are starting points, not tuned here.
"""

from k15.config import ExperimentConfig
from experiments.math_rl import REQUIRED, config as math_rl  # noqa: F401 (REQUIRED: the same keys)


def config() -> ExperimentConfig:
    cfg = math_rl()
    d = cfg.data
    d.prompt_field, d.answer_field, d.answer_from, d.image_field = "problem", "answer", "none", "images"
    d.response_field, d.difficulty_field = "solution", "difficulty"
    cfg.rl.max_new_tokens = cfg.eval.max_new_tokens = 1024  # image tokens take their share of the context
    cfg.model.max_seq_len = 4096
    return cfg
