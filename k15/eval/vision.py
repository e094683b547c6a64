"""Held-out evaluation of a VLM on the synthetic world's image tasks: pass@1 per task and level.

problem: the text evaluation's held-out arithmetic problems, rendered as images;
count / compare / chart: `2 x eval.problems_per_level` held-out documents each, grouped by their level.
Sampling, scoring and the per-level means are those of the text evaluation (k15.eval.evaluate).
"""

from __future__ import annotations

import torch

from k15.chat import RAW, ChatFormat, image_text
from k15.config import EvalConfig, WorldConfig
from k15.data.vision_prompts import doc_prompt
from k15.errors import DataError
from k15.eval.evaluate import EvalItem, EvalResult, tally
from k15.models.hf_vlm import HFVisionLanguageModel
from k15.models.vlm import VisionLanguageModel
from k15.rollout.sampling import SamplingParams
from k15.rollout.vision import ImagePrompt, VisionRolloutEngine
from k15.synthetic.corpus import world_levels
from k15.synthetic.arithmetic import heldout_set
from k15.synthetic.images import VisionDoc, check_image_levels, problem_image, vision_docs
from k15.tokenizer import stop_token_ids

EVAL_SEED_OFFSET = 17  # held-out documents of their own seed, apart from the ones used elsewhere


def heldout_docs(task: str, world: WorldConfig, per_level: int) -> list[VisionDoc]:
    seed = world.seed + EVAL_SEED_OFFSET
    if task == "problem":  # the text evaluation's problems, shown as images
        check_image_levels(world_levels(world))
        problems = heldout_set(world_levels(world), per_level, world.heldout_fraction, world.seed)
        return [VisionDoc(f"eval-{p.id}", "problem", [problem_image(p.prompt)], answer=p.answer, level=p.level,
                          meta={"prompt": p.prompt}) for p in problems]
    return list(vision_docs(task, 2 * per_level, "heldout", seed, heldout_fraction=world.heldout_fraction))


def evaluate_vision(vlm: VisionLanguageModel | HFVisionLanguageModel, tok, world: WorldConfig, cfg: EvalConfig,
                    tasks: list[str], seed: int, chat: ChatFormat = RAW) -> dict[str, EvalResult]:
    """k15's VLM reads raw prompts (as it was trained); a transformers VLM gets the run's chat format."""
    was_training = vlm.training
    vlm.eval()
    context = vlm.config.max_position_embeddings
    params = SamplingParams(max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature,
                            stop_token_ids=tuple(stop_token_ids(tok) if chat is RAW else chat.stop_ids(tok, vlm)))
    marker = image_text(tok, vlm)
    results = {}
    for task in tasks:
        heldout = heldout_docs(task, world, cfg.problems_per_level)
        processor = vlm.image_processor()
        # One prompt (pixels included) per document, shared by its samples: the engine encodes each image once.
        per_doc = [ImagePrompt(chat.prompt_ids(tok, doc_prompt(d), marker), [processor(img) for img in d.images])
                   for d in heldout]
        docs = [d for d in heldout for _ in range(cfg.samples_per_problem)]
        prompts = [p for p in per_doc for _ in range(cfg.samples_per_problem)]
        longest = max(len(p.ids) + sum(len(vlm.image_tokens(*px.shape[-2:])) - 1 for px in p.images)
                      for p in per_doc)  # placeholders expanded (a Pixtral checkpoint's row breaks too), no tower run
        if longest + cfg.max_new_tokens > context:
            raise DataError(f"eval of '{task}': a prompt of {longest} tokens (images included) + eval.max_new_tokens="
                            f"{cfg.max_new_tokens} exceeds the model context ({context})")
        # the cache holds what these prompts need, not the model's whole context (128k positions for Qwen2.5-VL)
        engine = VisionRolloutEngine(vlm, max_batch_size=cfg.batch_size, max_seq_len=longest + cfg.max_new_tokens)
        responses = engine.generate(prompts, params, generator=torch.Generator().manual_seed(seed)).tokens
        shown = [" ".join(["".join(s if isinstance(s, str) else "[image]" for s in d.segments), d.meta.get("prompt", "")])
                 for d in docs]
        items = [EvalItem(d.level if d.level is not None else 1, d.key, d.answer, f"{q} -> ") for d, q in zip(docs, shown)]
        results[task] = tally(items, responses, tok, examples=8, pass_k=cfg.pass_k)
    vlm.train(was_training)
    return results
