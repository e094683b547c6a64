"""Sampling answers from the model under curation, with or without chain of thought.

"Without CoT" forces the format: the start of an answer is appended to the prompt ids, so the
model's first token is already part of its answer and it cannot think first (the paper prompts the
model to guess; a tiny model has no instructions to follow, so we force it). The start is the
`<answer>` tag where the tokenizer has it (the tiny world), else `The final answer is \\boxed{` (a
model of the MATH style). The returned text then starts with it, so that the usual verifiers read it.
Prompts are shown in the run's chat format (k15.chat), as in RL and evaluation.
"""

from __future__ import annotations

from typing import Protocol

from transformers import PreTrainedModel, PreTrainedTokenizerBase

from k15.eval.evaluate import sample_responses
from k15.chat import RAW, ChatFormat
from k15.synthetic.traces import ANSWER
from k15.tokenizer import encode

BOXED_START = "The final answer is \\boxed{"


class Sampler(Protocol):
    def sample(self, prompts: list[str], n: int, temperature: float, no_cot: bool) -> list[list[str]]:
        """`n` response texts for every prompt."""


class ModelSampler:
    def __init__(
        self, model: PreTrainedModel, tok: PreTrainedTokenizerBase, max_new_tokens: int,
        no_cot_max_new_tokens: int, batch_size: int, seed: int, chat: ChatFormat = RAW,
    ):
        self.model, self.tok, self.chat = model, tok, chat
        self.max_new_tokens, self.no_cot_max_new_tokens = max_new_tokens, no_cot_max_new_tokens
        self.batch_size, self.seed, self.calls = batch_size, seed, 0
        self.answer_start = ANSWER if ANSWER in tok.get_vocab() else BOXED_START
        self.answer_ids = encode(tok, self.answer_start)

    def sample(self, prompts: list[str], n: int, temperature: float, no_cot: bool) -> list[list[str]]:
        if not prompts:
            return []
        forced = self.answer_ids if no_cot else []
        ids = [self.chat.prompt_ids(self.tok, p) + forced for p in prompts for _ in range(n)]
        self.calls += 1  # every call draws fresh samples, reproducibly
        was_training = self.model.training
        self.model.eval()
        out = sample_responses(
            self.model, self.tok, ids, temperature, self.no_cot_max_new_tokens if no_cot else self.max_new_tokens,
            self.batch_size, self.seed * 1000 + self.calls, self.chat.stop_ids(self.tok, self.model),
        )
        self.model.train(was_training)
        prefix = self.answer_start if no_cot else ""
        texts = [prefix + self.chat.response_text(self.tok, o) for o in out]
        return [texts[i * n : (i + 1) * n] for i in range(len(prompts))]
