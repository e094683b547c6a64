"""Labelled data for the learned reward models, made the way the paper made it (§2.3.5).

One example is (question, reference, response, label) plus the rationale a CoT RM learns to write.
`response` is the response's final answer (what the RM judges), not its whole chain of thought: the
tiny models' context holds a question, two answers and a rationale, not a trace.

Steps (`build_examples`, `run_rm_data`):
    1. draw free-form questions (k15.synthetic.freeform): the train split for training, the held-out
       split (the arithmetic chains' hash split) for the spot-check set;
    2. (a) the policy's own rollouts: sample its responses to the questions with the rollout engine,
           read each final answer (`final_answer`), label it with the checker;
       (b) rewrites: the reference's value in other surface forms (correct) and close but wrong values (wrong);
    3. keep rollout examples up to a share `rollout_share`, then fill with rewrites so that exactly
       `positive_share` of the examples are correct;
    4. give each the generator's rationale ("ref 8 apples, resp 8, same.").
Labels always come from the checker (`freeform.truth`), which never becomes an RM input. Deterministic
in the seed; written as JSONL, one example per line.
"""

from __future__ import annotations

import json
import random
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from transformers import PreTrainedModel, PreTrainedTokenizerBase

from k15.chat import RAW, ChatFormat
from k15.errors import DataError
from k15.eval.evaluate import sample_responses
from k15.reward_models.config import RMDataConfig
from k15.rewards.freeform import final_answer  # noqa: F401 -- re-exported: what the RMs judge
from k15.synthetic.freeform import FreeformProblem, rationale, response, sample_freeform, truth

SOURCES = ("rollout", "rewrite")


@dataclass(frozen=True)
class JudgeExample:
    question: str  # "7-2+4-1= how many apples?"
    reference: str  # "eight apples"
    response: str  # the response's final answer: "so the answer is 8."
    label: bool  # the checker's judgement: does `response` state the reference's value?
    rationale: str  # "ref 8 apples, resp 8, same." -- what the CoT RM writes before its verdict
    source: str  # rollout | rewrite
    form: str = ""  # how the response is written: a freeform FORM, "kind:FORM" for a wrong one, "rollout"


def judge_prompt(ex: JudgeExample) -> str:
    """What both RMs read (the Classic RM scores it, the CoT RM continues it): question, reference, response."""
    return f"q: {ex.question} ref: {ex.reference} resp: {ex.response} judge:"


def labelled(fp: FreeformProblem, answer: str, source: str, form: str) -> JudgeExample:
    return JudgeExample(fp.question, fp.reference, answer, truth(fp.reference, answer), rationale(fp.reference, answer),
                        source, form)


def rollout_examples(
    model: PreTrainedModel,
    tok: PreTrainedTokenizerBase,
    problems: list[FreeformProblem],
    samples_per_question: int,
    temperature: float,
    max_new_tokens: int,
    seed: int,
    chat: ChatFormat = RAW,
    batch_size: int = 64,
) -> list[JudgeExample]:
    """The policy's own answers to `problems` (as RL would prompt it), each labelled by the checker."""
    if not problems:
        return []
    prompts = [chat.prompt_ids(tok, fp.question) for fp in problems for _ in range(samples_per_question)]
    was_training = model.training
    model.eval()
    ids = sample_responses(model, tok, prompts, temperature, max_new_tokens, batch_size, seed, chat.stop_ids(tok, model))
    model.train(was_training)
    flat = [fp for fp in problems for _ in range(samples_per_question)]
    return [labelled(fp, final_answer(chat.response_text(tok, r)), "rollout", "rollout") for fp, r in zip(flat, ids)]


def build_examples(n: int, split: str, cfg: RMDataConfig, heldout_fraction: float, seed: int,
                   rollouts: list[JudgeExample] = ()) -> list[JudgeExample]:
    """`n` examples of `split`: rollout examples up to `cfg.rollout_share` (taken in a seeded order, within
    each label's quota), then rewrites, so that round(n * positive_share) are correct. `rollouts` must
    come from questions of the same split."""
    rng = random.Random(f"rm-data/{seed}/{split}")
    positives = round(n * cfg.positive_share)
    quota = {True: positives, False: n - positives}
    out: list[JudgeExample] = []
    pool = list(rollouts)
    rng.shuffle(pool)
    for ex in pool:
        if len(out) >= round(n * cfg.rollout_share):
            break
        if quota[ex.label] > 0:
            out.append(ex)
            quota[ex.label] -= 1
    wanted = [True] * quota[True] + [False] * quota[False]
    rng.shuffle(wanted)
    levels = range(cfg.min_level, cfg.max_level + 1)
    problems = sample_freeform(len(wanted), split, levels, heldout_fraction, seed + 1, cfg.unit_share)
    if len(problems) < len(wanted):
        raise DataError(f"only {len(problems)} {split} questions of levels {cfg.min_level}..{cfg.max_level} "
                        f"for {len(wanted)} rewrites")
    for fp, correct in zip(problems, wanted):
        text, form = response(fp, correct, rng)
        out.append(labelled(fp, text, "rewrite", form))
    rng.shuffle(out)
    return out


def write_examples(path: str | Path, examples: list[JudgeExample]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as f:
        for ex in examples:
            f.write(json.dumps(asdict(ex)) + "\n")
    return path


def read_examples(path: str | Path) -> list[JudgeExample]:
    """The examples of a JSONL file; a malformed line fails with its file and line number."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"no reward-model data at {path} (run the rm_data stage first)")
    names = {f.name: f.type for f in fields(JudgeExample)}
    out = []
    for i, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError:
            raise DataError(f"{path}:{i}: not JSON") from None
        missing = [k for k in names if k != "form" and k not in row]
        if not isinstance(row, dict) or missing or not isinstance(row.get("label"), bool):
            raise DataError(f"{path}:{i}: a judge example needs text fields {', '.join(k for k in names if k != 'label')} "
                            f"and a boolean label" + (f" (missing: {', '.join(missing)})" if missing else ""))
        out.append(JudgeExample(**{k: row[k] for k in names if k in row}))
    return out
