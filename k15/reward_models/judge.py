"""A learned reward model as the RL reward: load it, check that it answers, judge RL samples.

The paper's RL scores free-form answers with r(x, y, y*): does response y to prompt x state the
reference y*? (§2.3.5; its RL used the CoT RM.) Here a trained RM (Classic or CoT) judges the
samples of the prompts in `rewards.rm.domains`; the prompts' own verifiers still run beside it as
the ground truth, so the reward registry can count how often the two disagree.

Steps:
    1. `load_judge(cfg, path, key)`: the directory is checked first (k15.reward_models.checkpoints:
       k15's marker, or for an RM trained elsewhere its config's architecture), then loaded with SDPA
       attention on the CPU; the RL module moves it to its own device (`RewardJudge.to`). A CoT RM is
       prompted in the chat format its marker records (a foreign one: `rewards.rm.chat_template`);
    2. each RL sample becomes an example (question = the prompt, reference = the prompt's answer,
       response = the final answer of the response text, k15.rewards.freeform.final_answer), written
       as the RM reads it: k15's judge prompt, or `rewards.rm.prompt_template` for a foreign RM;
    3. `RewardJudge.judge(examples)` -> one RewardVerdict (correct, reason) per example: the Classic
       RM's P(correct) >= threshold ("correct" / "wrong"); the CoT RM's greedy rationale + verdict
       through the rollout engine, batched ("correct" / "wrong" / "unparsed": no verdict, reward 0;
       "too_long": the prompt leaves no room for `max_new_tokens` in the RM's context, reward 0);
    4. `check_domains(judge, records)` (always) and `probe(judge, records)` (rewards.rm.probe): before RL
       starts, at least one prompt must be of the RM's domains, and the RM judges a few prompts'
       references against themselves; a CoT RM none of whose verdicts parse stops the run in one line
       (an RM that never answers gives every sample reward 0, and RL would learn nothing, silently).
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

from k15.chat import chat_format
from k15.config import RMRewardConfig
from k15.errors import CheckpointError, DataError
from k15.reward_models.checkpoints import read_marker
from k15.reward_models.classic import load_classic_rm
from k15.reward_models.cot import load_cot_rm
from k15.reward_models.data import JudgeExample, judge_prompt
from k15.reward_models.verdicts import parse_verdict
from k15.rewards.freeform import final_answer
from k15.rewards.registry import domain_of
from k15.tokenizer import load_tokenizer

PROBES = 8  # prompts the probe judges before RL starts


class RewardVerdict(NamedTuple):
    correct: bool | None  # None: the CoT RM wrote no verdict (or had no room to)
    reason: str  # correct | wrong | unparsed | too_long


class RewardJudge:
    """One trained RM behind one call: examples in, verdicts out. `name` is its reward-registry name."""

    def __init__(self, name: str, rm, cfg: RMRewardConfig):
        self.name, self.rm, self.cfg = name, rm, cfg
        self.domains = set(cfg.domains)

    def to(self, device) -> RewardJudge:
        self.rm.model.to(device)
        return self

    def prompt(self, ex: JudgeExample) -> str:
        if self.cfg.prompt_template is None:
            return judge_prompt(ex)
        return self.cfg.prompt_template.format(question=ex.question, reference=ex.reference, response=ex.response)

    def judge(self, examples: list[JudgeExample]) -> list[RewardVerdict]:
        prompts = [self.prompt(ex) for ex in examples]
        if self.name == "classic_rm":
            return [RewardVerdict(p >= self.cfg.threshold, "correct" if p >= self.cfg.threshold else "wrong")
                    for p in self.rm.score(prompts)]
        # Each prompt needs its own room for the rationale and verdict: one long answer must not shorten the others.
        context = self.rm.model.config.max_position_embeddings
        fits = [len(self.rm.chat.prompt_ids(self.rm.tok, p)) + self.rm.max_new_tokens <= context for p in prompts]
        texts = iter(self.rm.generate([p for p, ok in zip(prompts, fits) if ok]))
        out = []
        for ok in fits:
            if not ok:
                out.append(RewardVerdict(None, "too_long"))
                continue
            correct, _ = parse_verdict(next(texts))
            out.append(RewardVerdict(correct, "unparsed" if correct is None else ("correct" if correct else "wrong")))
        return out


def example_of(question: str, reference: str, response_text: str) -> JudgeExample:
    """What the RM reads for one RL sample (the label is unknown here: the verifier gives it separately)."""
    return JudgeExample(question, reference, final_answer(response_text), False, "", "rl", "rollout")


def load_judge(cfg: RMRewardConfig, path: str | Path, key: str = "rewards.rm.path") -> RewardJudge:
    if cfg.kind == "classic_rm":
        rm = load_classic_rm(path, key, "sdpa", cfg.batch_size, foreign_ok=True)
    elif cfg.kind == "cot_rm":
        foreign = read_marker(path, "cot", key, foreign_ok=True).get("foreign", False)
        # k15's CoT RMs record the chat format they were trained in; a foreign one says it in rewards.rm.chat_template
        chat = chat_format(cfg.chat_template, None, load_tokenizer(path, key)) if foreign else None
        rm = load_cot_rm(path, key, "sdpa", cfg.max_new_tokens, cfg.batch_size, chat, foreign_ok=True)
    else:
        raise ValueError(f"no reward model to load for rewards.rm.kind={cfg.kind!r}")
    return RewardJudge(cfg.kind, rm, cfg)


def check_domains(judge: RewardJudge, records) -> list:
    """The records the RM judges; DataError when there are none (the RM would judge nothing)."""
    mine = [r for r in records if domain_of(r) in judge.domains]
    if not mine:
        raise DataError(f"rewards.rm.domains={sorted(judge.domains)}: no prompt of the RL prompt set has one of "
                        "these domains, so the reward model would judge nothing")
    return mine


def probe(judge: RewardJudge, records, key: str = "rewards.rm.path") -> list[RewardVerdict]:
    """Judge up to PROBES of `records` (those of the RM's domains) with their own reference as the
    response; CheckpointError when not one verdict parses. Returns the verdicts."""
    chosen = check_domains(judge, records)[:PROBES]
    verdicts = judge.judge([example_of(r.prompt, r.answer, r.answer) for r in chosen])
    if all(v.correct is None for v in verdicts):
        raise CheckpointError(f"{key}: the {judge.name}'s verdicts never parse (0 of {len(verdicts)} probe judgements "
                              "end in a verdict such as {\"correct\": true}); is it a CoT reward model?")
    return verdicts
