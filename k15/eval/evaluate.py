"""Held-out evaluation: pass@1 (and unbiased pass@k) per group, mean tokens per answer.

Two kinds of held-out set, scored the same way:
    the synthetic world   `eval.problems_per_level` problems per level, the rule verifier; groups
                          are levels and the overall pass@1 is the mean over levels (each level
                          weighs the same)
    a prompt set          `eval.prompt_path`, read through the `data.*` field mapping and prompted
                          with the run's chat format; each record's own verifier (math answers in
                          \\boxed{}, #### N, ...); groups are difficulty labels when every record has
                          one, else domains; the overall numbers are means over problems
Every problem gets `eval.samples_per_problem` (n) samples at `eval.temperature`: pass@1 is the mean
reward, pass@k the unbiased estimate 1 - C(n-c, k) / C(n, k) from the c correct of n (Chen et al. 2021).
"""

from __future__ import annotations

import random
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from math import comb
from typing import NamedTuple

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from k15.chat import RAW, ChatFormat
from k15.config import EvalConfig, RewardConfig, WorldConfig
from k15.data.prompts import PromptRecord
from k15.errors import DataError
from k15.rewards.rule import Verdict, verify
from k15.rollout.engine import RolloutEngine, SamplingParams
from k15.rollout.vision import VisionRolloutEngine
from k15.models.policy import is_vlm
from k15.synthetic.arithmetic import Problem, heldout_set
from k15.synthetic.corpus import world_levels
from k15.tokenizer import prompt_ids, stop_token_ids


class EvalItem(NamedTuple):
    group: int | str  # level, difficulty or domain
    problem: str  # the samples of one problem share this key (for pass@k)
    answer: str
    shown: str  # the prompt as text, for the logged examples


@dataclass
class LevelResult:
    pass_at_1: float
    mean_tokens: float
    long_share: float  # fraction of answers that think first (long CoT)
    samples: int
    problems: int = 0
    pass_at_k: dict[int, float] = field(default_factory=dict)  # k > 1


@dataclass
class EvalResult:
    levels: dict[int | str, LevelResult]  # per group
    examples: list[str] = field(default_factory=list)  # a few responses, for reading
    group_by: str = "level"  # level | difficulty | domain | all
    macro: bool = True  # overall = mean over groups (synthetic levels), else mean over problems
    verdicts: Counter = field(default_factory=Counter)  # "verifier/reason" -> samples

    def _overall(self, value) -> float:
        groups = list(self.levels.values())
        if self.macro:
            return sum(value(r) for r in groups) / len(groups)
        return sum(value(r) * r.problems for r in groups) / sum(r.problems for r in groups)

    @property
    def pass_at_1(self) -> float:
        return self._overall(lambda r: r.pass_at_1)

    def pass_at_k(self, k: int) -> float:
        return self._overall(lambda r: r.pass_at_k[k])

    @property
    def mean_tokens(self) -> float:
        total = sum(r.mean_tokens * r.samples for r in self.levels.values())
        return total / sum(r.samples for r in self.levels.values())

    def to_dict(self) -> dict:
        ks = sorted(next(iter(self.levels.values())).pass_at_k)
        groups = {
            str(group): {
                "pass@1": round(r.pass_at_1, 4),
                **{f"pass@{k}": round(v, 4) for k, v in sorted(r.pass_at_k.items())},
                "mean_tokens": round(r.mean_tokens, 2),
                "long_share": round(r.long_share, 4),
                "samples": r.samples,
            }
            for group, r in sorted(self.levels.items(), key=lambda kv: (isinstance(kv[0], str), kv[0]))
        }
        out = {"pass@1": round(self.pass_at_1, 4), **{f"pass@{k}": round(self.pass_at_k(k), 4) for k in ks},
               "mean_tokens": round(self.mean_tokens, 2)}
        if self.group_by == "level":  # the synthetic world's shape, which tools/findings.py reads
            out["levels"] = groups
        else:
            for group, r in self.levels.items():
                groups[str(group)]["problems"] = r.problems
            out["group_by"], out["groups"] = self.group_by, groups
            out["verdicts"] = dict(sorted(self.verdicts.items()))
        return out


def unbiased_pass_at_k(n: int, c: int, k: int) -> float:
    """Probability that at least one of k samples drawn without replacement from n (c of them correct) is correct."""
    return 1.0 - comb(n - c, k) / comb(n, k)


def sample_responses(
    model: PreTrainedModel,
    tok: PreTrainedTokenizerBase,
    prompts: list,
    temperature: float,
    max_new_tokens: int,
    batch_size: int,
    seed: int,
    stop_ids: list[int] | None = None,
) -> list[list[int]]:
    """Responses (token ids, up to and including the stop token) from the rollout engine; T=0 is greedy.
    A VLM takes image prompts (k15.rollout.vision.ImagePrompt, placeholders expanded) among the id lists."""
    context = model.config.max_position_embeddings
    longest = max(len(p) for p in prompts)
    if longest + max_new_tokens > context:
        raise DataError(f"a prompt of {longest} tokens + {max_new_tokens} new tokens exceeds the model context ({context})")
    # the cache holds what these prompts need, not the model's whole context (32k positions for Qwen2.5)
    engine_cls = VisionRolloutEngine if is_vlm(model) else RolloutEngine  # image prompts: ImagePrompts, expanded
    engine = engine_cls(model, max_batch_size=min(batch_size, len(prompts)), max_seq_len=longest + max_new_tokens)
    stops = tuple(stop_ids if stop_ids is not None else stop_token_ids(tok))
    params = SamplingParams(max_new_tokens=max_new_tokens, temperature=temperature, stop_token_ids=stops)
    return engine.generate(prompts, params, generator=torch.Generator().manual_seed(seed)).tokens


def evaluate(
    model: PreTrainedModel,
    tok: PreTrainedTokenizerBase,
    world: WorldConfig,
    cfg: EvalConfig,
    seed: int,
    problems: list[Problem] | None = None,
) -> EvalResult:
    """The synthetic world's held-out problems, pass@1 per level."""
    problems = problems or heldout_set(world_levels(world), cfg.problems_per_level, world.heldout_fraction, world.seed)
    flat = [p for p in problems for _ in range(cfg.samples_per_problem)]
    responses = _sampled(model, tok, [prompt_ids(tok, p.prompt) for p in flat], cfg, seed, stop_token_ids(tok))
    items = [EvalItem(p.level, p.id, p.answer, p.prompt) for p in flat]
    return tally(items, responses, tok, pass_k=cfg.pass_k)


def evaluate_prompt_set(
    model: PreTrainedModel,
    tok: PreTrainedTokenizerBase,
    records: list[PromptRecord],
    cfg: EvalConfig,
    seed: int,
    chat: ChatFormat = RAW,
    rewards: RewardConfig | None = None,
) -> EvalResult:
    """A user's held-out prompt set: each record's verifier, grouped by difficulty (or domain) when present."""
    from k15.data.vision_prompts import image_prompt
    from k15.rewards.registry import RewardRegistry  # the registry imports k15.data.prompts, as this module does

    records = records[: cfg.num_prompts] if cfg.num_prompts else records
    n = cfg.samples_per_problem
    flat = [r for r in records for _ in range(n)]
    if is_vlm(model):  # text or image prompts; an image prompt's pixels are read once and shared by its samples
        prompts = [image_prompt(r, tok, model, chat) for r in records]
    elif any(r.images for r in records):
        raise DataError(f"prompt {next(r.id for r in records if r.images)} has images, but the model is a text model")
    else:
        prompts = [chat.prompt_ids(tok, r.prompt) for r in records]  # rendered once per record, not per sample
    responses = _sampled(model, tok, [p for p in prompts for _ in range(n)], cfg, seed, chat.stop_ids(tok, model))
    ids = [f"{r.id}#{j % n}" for j, r in enumerate(flat)]
    with RewardRegistry.from_config(rewards or RewardConfig()) as registry:
        by_id = registry.score([(i, chat.response_text(tok, resp), r) for i, resp, r in zip(ids, responses, flat)])
        counts = Counter(registry.counts)
    if all(r.difficulty is not None for r in records):
        group_by, group = "difficulty", lambda r: r.difficulty
    elif len({r.domain for r in records}) > 1:
        group_by, group = "domain", lambda r: r.domain
    else:
        group_by, group = "all", lambda r: "all"
    items = [EvalItem(group(r), r.id, r.answer, r.prompt) for r in flat]
    result = tally(items, responses, tok, [by_id[i] for i in ids], pass_k=cfg.pass_k, macro=False)
    result.group_by, result.verdicts = group_by, counts
    return result


def _sampled(model, tok, prompts: list[list[int]], cfg: EvalConfig, seed: int, stop_ids: list[int]) -> list[list[int]]:
    was_training = model.training
    model.eval()
    responses = sample_responses(model, tok, prompts, cfg.temperature, cfg.max_new_tokens, cfg.batch_size, seed, stop_ids)
    model.train(was_training)
    return responses


def tally(items: list[EvalItem], responses: list[list[int]], tok: PreTrainedTokenizerBase,
          verdicts: list[Verdict] | None = None, examples: int = 12, pass_k: list[int] = (1,), macro: bool = True
          ) -> EvalResult:
    """Per-group pass@1 (pass@k), tokens and long-CoT share of scored responses. Without `verdicts`, the rule
    verifier scores each response against its item's answer."""
    texts = [tok.decode(ids) for ids in responses]
    if verdicts is None:
        verdicts = [verify(text, item.answer) for text, item in zip(texts, items, strict=True)]
    rewards, lengths, longs = defaultdict(list), defaultdict(list), defaultdict(list)
    correct: dict[int | str, dict[str, list[bool]]] = defaultdict(lambda: defaultdict(list))
    shown = []
    count = min(examples, len(items))
    picked = {j * len(items) // count for j in range(count)}  # `examples` of them, evenly spread
    for i, (item, ids, text, verdict) in enumerate(zip(items, responses, texts, verdicts, strict=True)):
        rewards[item.group].append(verdict.reward)
        lengths[item.group].append(len(ids))
        longs[item.group].append(float("<think>" in text))
        correct[item.group][item.problem].append(verdict.reward == 1.0)
        if i in picked:
            shown.append(f"[{verdict.reason}] {item.shown}{text}   (answer {item.answer})")
    mean = lambda xs: sum(xs) / len(xs)  # noqa: E731
    levels = {}
    for group in sorted(rewards, key=lambda g: (isinstance(g, str), g)):
        per_problem = list(correct[group].values())
        at_k = {k: mean([unbiased_pass_at_k(len(c), sum(c), k) for c in per_problem]) for k in pass_k if k > 1}
        levels[group] = LevelResult(mean(rewards[group]), mean(lengths[group]), mean(longs[group]), len(rewards[group]),
                                    len(per_problem), at_k)
    return EvalResult(levels, shown, macro=macro)


def sample_problems_for_logging(world: WorldConfig, n: int = 6) -> list[str]:
    """A few held-out prompts across levels, to watch generations during training."""
    picked = heldout_set(world_levels(world), 1, world.heldout_fraction, world.seed + 7)
    random.Random(0).shuffle(picked)  # with more levels than n, a fixed random n of them
    return [p.prompt for p in sorted(picked[:n], key=lambda p: p.level)]
