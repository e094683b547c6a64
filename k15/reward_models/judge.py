"""A learned reward model as the RL reward: load it, check that it answers, judge RL samples.

The paper's RL scores free-form answers with r(x, y, y*): does response y to prompt x state the
reference y*? (§2.3.5; its RL used the CoT RM.) Here a trained RM (Classic or CoT) judges the
samples of the prompts in `rewards.rm.domains`; the prompts' own verifiers still run beside it as
the ground truth, so the reward registry can count how often the two disagree.

Steps:
    1. `load_judge(cfg, path, key, chat)`: the directory is checked first (k15.reward_models.checkpoints:
       k15's marker, or for an RM trained elsewhere its config's architecture), then loaded;
    2. each RL sample becomes an example (question = the prompt, reference = the prompt's answer,
       response = the final answer of the response text, k15.rewards.freeform.final_answer), written
       as the RM reads it: k15's judge prompt, or `rewards.rm.prompt_template` for a foreign RM;
    3. `RewardJudge.judge(examples)` -> one (correct, reason) per example: the Classic RM's
       P(correct) >= threshold ("correct" / "wrong"); the CoT RM's greedy rationale + verdict through the
       rollout engine, batched ("correct" / "wrong" / "unparsed": no verdict, reward 0, counted);
    4. `probe(judge, records)`: before RL starts, the RM judges a few prompts' references against
       themselves; a CoT RM none of whose verdicts parse stops the run in one line (an RM that never
       answers gives every sample reward 0, and RL would learn nothing, silently).
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

from k15.chat import RAW, ChatFormat
from k15.config import RMRewardConfig
from k15.errors import CheckpointError
from k15.reward_models.classic import load_classic_rm
from k15.reward_models.cot import load_cot_rm
from k15.reward_models.data import JudgeExample, judge_prompt
from k15.rewards.freeform import final_answer
from k15.reward_models.verdicts import parse_verdict

PROBES = 8  # prompts the probe judges before RL starts


class Judgement(NamedTuple):
    correct: bool | None  # None: the CoT RM wrote no verdict
    reason: str  # correct | wrong | unparsed


class RewardJudge:
    """One trained RM behind one call: examples in, verdicts out. `name` is its reward-registry name."""

    def __init__(self, name: str, rm, cfg: RMRewardConfig):
        self.name, self.rm, self.cfg = name, rm, cfg
        self.domains = set(cfg.domains)

    def prompt(self, ex: JudgeExample) -> str:
        if self.cfg.prompt_template is None:
            return judge_prompt(ex)
        return self.cfg.prompt_template.format(question=ex.question, reference=ex.reference, response=ex.response)

    def judge(self, examples: list[JudgeExample]) -> list[Judgement]:
        prompts = [self.prompt(ex) for ex in examples]
        if self.name == "classic_rm":
            return [Judgement(p >= self.cfg.threshold, "correct" if p >= self.cfg.threshold else "wrong")
                    for p in self.rm.score(prompts)]
        out = []
        for text in self.rm.generate(prompts):
            correct, _ = parse_verdict(text)
            out.append(Judgement(correct, "unparsed" if correct is None else ("correct" if correct else "wrong")))
        return out


def example_of(question: str, reference: str, response_text: str) -> JudgeExample:
    """What the RM reads for one RL sample (the label is unknown here: the verifier gives it separately)."""
    return JudgeExample(question, reference, final_answer(response_text), False, "", "rl", "rollout")


def load_judge(cfg: RMRewardConfig, path: str | Path, key: str = "rewards.rm.path", chat: ChatFormat = RAW,
               attn_implementation: str = "sdpa") -> RewardJudge:
    if cfg.kind == "classic_rm":
        rm = load_classic_rm(path, key, attn_implementation, cfg.batch_size, foreign_ok=True)
    elif cfg.kind == "cot_rm":
        rm = load_cot_rm(path, key, attn_implementation, cfg.max_new_tokens, cfg.batch_size, chat, foreign_ok=True)
    else:
        raise ValueError(f"no reward model to load for rewards.rm.kind={cfg.kind!r}")
    return RewardJudge(cfg.kind, rm, cfg)


def probe(judge: RewardJudge, records, key: str = "rewards.rm.path") -> list[Judgement]:
    """Judge up to PROBES of `records` (those of the RM's domains) with their own reference as the
    response; CheckpointError when not one verdict parses. Returns the judgements."""
    chosen = [r for r in records if (r.extra.get("verifier") or r.domain) in judge.domains][:PROBES]
    if not chosen:
        raise CheckpointError(f"rewards.rm.domains={sorted(judge.domains)}: no prompt of the RL prompt set has one of "
                              "these domains, so the reward model would judge nothing")
    verdicts = judge.judge([example_of(r.prompt, r.answer, r.answer) for r in chosen])
    if all(v.correct is None for v in verdicts):
        raise CheckpointError(f"{key}: the {judge.name}'s verdicts never parse (0 of {len(verdicts)} probe judgements "
                              "end in a verdict such as {\"correct\": true}); is it a CoT reward model?")
    return verdicts

