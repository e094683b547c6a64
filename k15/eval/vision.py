"""Held-out evaluation of a VLM on the synthetic world's image tasks: pass@1 per task and level.

problem: the text evaluation's held-out arithmetic problems, rendered as images;
count / compare / chart: `2 x eval.problems_per_level` held-out documents each, grouped by their level.
Sampling, scoring and the per-level means are those of the text evaluation (k15.eval.evaluate).
"""

from __future__ import annotations

from collections import defaultdict

import torch

from k15.config import EvalConfig, WorldConfig
from k15.data.vision_prompts import doc_prompt
from k15.errors import DataError
from k15.eval.evaluate import EvalResult, LevelResult
from k15.models.vlm import VisionLanguageModel
from k15.rewards.rule import verify
from k15.rollout.sampling import SamplingParams
from k15.rollout.vision import ImagePrompt, VisionRolloutEngine
from k15.synthetic.corpus import world_levels
from k15.synthetic.arithmetic import heldout_set
from k15.synthetic.images import VisionDoc, problem_image, vision_docs
from k15.tokenizer import prompt_ids, stop_token_ids

EVAL_SEED_OFFSET = 17  # held-out documents of their own seed, apart from the ones used elsewhere


def heldout_docs(task: str, world: WorldConfig, per_level: int) -> list[VisionDoc]:
    seed = world.seed + EVAL_SEED_OFFSET
    if task == "problem":  # the text evaluation's problems, shown as images
        problems = heldout_set(world_levels(world), per_level, world.heldout_fraction, world.seed)
        return [VisionDoc(f"eval-{p.id}", "problem", [problem_image(p.prompt)], answer=p.answer, level=p.level,
                          meta={"prompt": p.prompt}) for p in problems]
    return list(vision_docs(task, 2 * per_level, "heldout", seed, heldout_fraction=world.heldout_fraction))


def evaluate_vision(vlm: VisionLanguageModel, tok, world: WorldConfig, cfg: EvalConfig, tasks: list[str],
                    seed: int) -> dict[str, EvalResult]:
    was_training = vlm.training
    vlm.eval()
    context = vlm.config.max_position_embeddings
    engine = VisionRolloutEngine(vlm, max_batch_size=cfg.batch_size, max_seq_len=context)
    params = SamplingParams(max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature,
                            stop_token_ids=tuple(stop_token_ids(tok)))
    results = {}
    for task in tasks:
        docs = [d for d in heldout_docs(task, world, cfg.problems_per_level) for _ in range(cfg.samples_per_problem)]
        prompts = [ImagePrompt(prompt_ids(tok, doc_prompt(d)), d.images) for d in docs]
        longest = max(len(engine.prepare([p])[0]) for p in prompts[:: cfg.samples_per_problem])
        if longest + cfg.max_new_tokens > context:
            raise DataError(f"eval of '{task}': a prompt of {longest} tokens (images included) + eval.max_new_tokens="
                            f"{cfg.max_new_tokens} exceeds the model context ({context})")
        responses = engine.generate(prompts, params, generator=torch.Generator().manual_seed(seed)).tokens
        rewards, lengths, longs = defaultdict(list), defaultdict(list), defaultdict(list)
        examples = []
        for i, (doc, ids) in enumerate(zip(docs, responses)):
            text = tok.decode(ids)
            verdict = verify(text, doc.answer)
            level = doc.level if doc.level is not None else 1
            rewards[level].append(verdict.reward)
            lengths[level].append(len(ids))
            longs[level].append(float("<think>" in text))
            if i % max(1, len(docs) // 8) == 0:
                question = "".join(s if isinstance(s, str) else "[image]" for s in doc.segments)
                shown = doc.meta.get("prompt", "")
                examples.append(f"[{verdict.reason}] {question} {shown} -> {text}   (answer {doc.answer})")
        mean = lambda xs: sum(xs) / len(xs)
        levels = {lv: LevelResult(mean(rewards[lv]), mean(lengths[lv]), mean(longs[lv]), len(rewards[lv]))
                  for lv in sorted(rewards)}
        results[task] = EvalResult(levels, examples)
    vlm.train(was_training)
    return results
