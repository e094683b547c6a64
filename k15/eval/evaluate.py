"""Held-out evaluation: pass@1 per difficulty level and mean tokens per answer.

pass@1 at a level is the mean reward over `samples_per_problem` samples of each held-out problem at
`temperature`; the overall pass@1 is the mean over levels, so every level weighs the same.
"""

from __future__ import annotations

import random
from collections import defaultdict
from dataclasses import dataclass, field

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from k15.config import EvalConfig, WorldConfig
from k15.errors import DataError
from k15.rewards.rule import verify
from k15.rollout.engine import RolloutEngine, SamplingParams
from k15.synthetic.arithmetic import Problem, heldout_set
from k15.synthetic.corpus import world_levels
from k15.tokenizer import prompt_ids, stop_token_ids


@dataclass
class LevelResult:
    pass_at_1: float
    mean_tokens: float
    long_share: float  # fraction of answers that think first (long CoT)
    samples: int


@dataclass
class EvalResult:
    levels: dict[int, LevelResult]
    examples: list[str] = field(default_factory=list)  # a few responses, for reading

    @property
    def pass_at_1(self) -> float:
        return sum(r.pass_at_1 for r in self.levels.values()) / len(self.levels)

    @property
    def mean_tokens(self) -> float:
        total = sum(r.mean_tokens * r.samples for r in self.levels.values())
        return total / sum(r.samples for r in self.levels.values())

    def to_dict(self) -> dict:
        return {
            "pass@1": round(self.pass_at_1, 4),
            "mean_tokens": round(self.mean_tokens, 2),
            "levels": {
                str(level): {
                    "pass@1": round(r.pass_at_1, 4),
                    "mean_tokens": round(r.mean_tokens, 2),
                    "long_share": round(r.long_share, 4),
                    "samples": r.samples,
                }
                for level, r in sorted(self.levels.items())
            },
        }


def sample_responses(
    model: PreTrainedModel,
    tok: PreTrainedTokenizerBase,
    prompts: list[list[int]],
    temperature: float,
    max_new_tokens: int,
    batch_size: int,
    seed: int,
) -> list[list[int]]:
    """Responses (token ids, up to and including the stop token) from the rollout engine; T=0 is greedy."""
    context = model.config.max_position_embeddings
    longest = max(len(p) for p in prompts)
    if longest + max_new_tokens > context:
        raise DataError(f"a prompt of {longest} tokens + {max_new_tokens} new tokens exceeds the model context ({context})")
    engine = RolloutEngine(model, max_batch_size=batch_size, max_seq_len=context)
    params = SamplingParams(max_new_tokens=max_new_tokens, temperature=temperature, stop_token_ids=tuple(stop_token_ids(tok)))
    return engine.generate(prompts, params, generator=torch.Generator().manual_seed(seed)).tokens


def evaluate(
    model: PreTrainedModel,
    tok: PreTrainedTokenizerBase,
    world: WorldConfig,
    cfg: EvalConfig,
    seed: int,
    problems: list[Problem] | None = None,
) -> EvalResult:
    problems = problems or heldout_set(world_levels(world), cfg.problems_per_level, world.heldout_fraction, world.seed)
    was_training = model.training
    model.eval()
    prompts = [prompt_ids(tok, p.prompt) for p in problems for _ in range(cfg.samples_per_problem)]
    responses = sample_responses(model, tok, prompts, cfg.temperature, cfg.max_new_tokens, cfg.batch_size, seed)
    model.train(was_training)

    flat = [p for p in problems for _ in range(cfg.samples_per_problem)]
    return tally([(p.level, p.answer, p.prompt) for p in flat], responses, tok)


def tally(items: list[tuple[int, str, str]], responses: list[list[int]], tok: PreTrainedTokenizerBase,
          examples: int = 12) -> EvalResult:
    """Per-level pass@1, tokens and long-CoT share of scored responses; items are (level, answer, shown prompt)."""
    rewards, lengths, longs = defaultdict(list), defaultdict(list), defaultdict(list)
    shown = []
    every = max(1, len(items) // examples)
    for i, ((level, answer, prompt), ids) in enumerate(zip(items, responses, strict=True)):
        text = tok.decode(ids)
        verdict = verify(text, answer)
        rewards[level].append(verdict.reward)
        lengths[level].append(len(ids))
        longs[level].append(float("<think>" in text))
        if i % every == 0:
            shown.append(f"[{verdict.reason}] {prompt}{text}   (answer {answer})")
    mean = lambda xs: sum(xs) / len(xs)
    levels = {
        level: LevelResult(mean(rewards[level]), mean(lengths[level]), mean(longs[level]), len(rewards[level]))
        for level in sorted(rewards)
    }
    return EvalResult(levels, shown)


def sample_problems_for_logging(world: WorldConfig, n: int = 6) -> list[str]:
    """A few held-out prompts across levels, to watch generations during training."""
    picked = heldout_set(world_levels(world), 1, world.heldout_fraction, world.seed + 7)
    random.Random(0).shuffle(picked)  # with more levels than n, a fixed random n of them
    return [p.prompt for p in sorted(picked[:n], key=lambda p: p.level)]
