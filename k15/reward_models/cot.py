"""The Chain-of-Thought reward model: the decoder fine-tuned to reason briefly, then write a verdict.

The paper's CoT RM is the policy model fine-tuned on CoT-labelled examples: given (question,
reference, response) it writes step-by-step reasoning and then a correctness judgement in JSON. It
beat the Classic RM on the paper's spot check (98.5% vs 84.4%); the reasoning reduces both answers
to a canonical value before comparing them, which a single scalar has to do in one shot.

Steps:
    1. `cot_example`: an SFT example whose prompt is `judge_prompt(example)` and whose response is
       " " + rationale + " " + verdict (k15.reward_models.verdicts, json or plain) + end of sequence;
       the loss is on the response only (k15.chat.ChatFormat.example puts IGNORE on the prompt);
    2. `CoTRMModule`: the SFT module (next-token loss on packed rows, k15.data.packing);
    3. `export_cot_rm` / `load_cot_rm`: a causal-LM directory plus the RM marker (with the verdict format
       and the chat format it was trained in, so a later run prompts it the same way);
    4. `CoTRM.judge(examples)`: greedy generation with the rollout engine (batched), then
       `parse_verdict` on each text; a text without a verdict is reason `unparsed`, counted, and
       wrong wherever a reward is given for it.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

from transformers import PreTrainedModel, PreTrainedTokenizerBase

from k15.chat import RAW, ChatFormat
from k15.data.packing import pack_examples
from k15.errors import DataError
from k15.eval.evaluate import sample_responses
from k15.models.decoder import load_decoder
from k15.modules.sft import SFTModule
from k15.reward_models.checkpoints import export_reward_model, read_marker
from k15.reward_models.data import JudgeExample, judge_prompt
from k15.reward_models.loaders import ItemsDataModule
from k15.reward_models.verdicts import format_verdict, parse_verdict
from k15.synthetic.traces import Piece
from k15.tokenizer import load_tokenizer


class Judgement(NamedTuple):
    correct: bool | None  # None: no verdict in the text (reason "unparsed"), which counts as wrong
    reason: str  # ok | unparsed
    text: str  # what the RM wrote


def cot_target(ex: JudgeExample, fmt: str) -> str:
    """What the CoT RM learns to write after the judge prompt: " ref 8, resp 8, same. correct: true"."""
    return f" {ex.rationale} {format_verdict(ex.label, fmt)}"


def cot_example(tok: PreTrainedTokenizerBase, ex: JudgeExample, fmt: str, chat: ChatFormat = RAW
                ) -> tuple[list[int], list[int]]:
    """input_ids and labels: the loss is on the rationale, the verdict and the end of the text only."""
    ids, labels = chat.example(tok, judge_prompt(ex), [Piece(cot_target(ex, fmt))])
    if chat.template is None and tok.eos_token_id is not None:  # a template ends the turn itself
        ids, labels = ids + [tok.eos_token_id], labels + [tok.eos_token_id]
    return ids, labels


def cot_data(tok: PreTrainedTokenizerBase, examples: list[JudgeExample], fmt: str, batch_size: int, seed: int,
             max_len: int, chat: ChatFormat = RAW) -> tuple[ItemsDataModule, int]:
    """Shuffled batches of `batch_size` examples packed into rows of `max_len`, and how many examples
    were dropped as longer than a row (cutting them would teach verdicts that never come)."""
    encoded = [cot_example(tok, ex, fmt, chat) for ex in examples]
    kept = [e for e in encoded if len(e[0]) <= max_len]
    if not kept:
        raise DataError(f"every CoT RM example is longer than the context ({max_len} tokens)")
    collate = lambda batch: pack_examples(batch, max_len, tok.pad_token_id)  # noqa: E731
    return ItemsDataModule(kept, batch_size, seed, collate), len(encoded) - len(kept)


class CoTRMModule(SFTModule):
    """The SFT module under its own name: next-token loss on rationale + verdict."""

    stage_name = "cot_rm"


def with_context(model: PreTrainedModel, max_len: int) -> PreTrainedModel:
    """`model` allowed `max_len` positions (rotary positions extend; fine-tuning teaches the new ones)."""
    model.config.max_position_embeddings = max(model.config.max_position_embeddings, max_len)
    return model


class CoTRM:
    """A trained CoT RM for inference: greedy reasoning + verdict for each example."""

    def __init__(self, model: PreTrainedModel, tok: PreTrainedTokenizerBase, max_new_tokens: int = 96,
                 batch_size: int = 64, chat: ChatFormat = RAW):
        self.model, self.tok, self.chat = model.eval(), tok, chat
        self.max_new_tokens, self.batch_size = max_new_tokens, batch_size

    def generate(self, prompts: list[str]) -> list[str]:
        """Greedy continuations of judge prompts, as text (without the final end of sequence)."""
        if not prompts:
            return []
        ids = [self.chat.prompt_ids(self.tok, p) for p in prompts]
        room = self.model.config.max_position_embeddings - max(len(i) for i in ids)
        if room < 1:
            raise DataError(f"a judge prompt of {max(len(i) for i in ids)} tokens fills the CoT RM's context "
                            f"({self.model.config.max_position_embeddings})")
        out = sample_responses(self.model, self.tok, ids, 0.0, min(self.max_new_tokens, room), self.batch_size, 0,
                               self.chat.stop_ids(self.tok, self.model))
        return [self.chat.response_text(self.tok, r) for r in out]

    def judge(self, examples: list[JudgeExample]) -> list[Judgement]:
        texts = self.generate([judge_prompt(ex) for ex in examples])
        return [Judgement(*parse_verdict(t), t) for t in texts]


def export_cot_rm(model: PreTrainedModel, tok: PreTrainedTokenizerBase, path: str | Path, verdict_format: str,
                  chat: ChatFormat = RAW) -> Path:
    return export_reward_model(model, tok, path, "cot", verdict_format=verdict_format,
                               max_len=model.config.max_position_embeddings, chat_template=chat.template,
                               system_prompt=chat.system_prompt)


def load_cot_rm(path: str | Path, key: str = "cot_rm", attn_implementation: str = "sdpa", max_new_tokens: int = 96,
                batch_size: int = 64, chat: ChatFormat | None = None, foreign_ok: bool = False) -> CoTRM:
    """`chat`: how to prompt it; None: the chat format its marker records (raw text when it records none)."""
    info = read_marker(path, "cot", key, foreign_ok)
    if chat is None:
        chat = ChatFormat(info.get("chat_template"), info.get("system_prompt"))
    model = load_decoder(path, attn_implementation, key)
    return CoTRM(model, load_tokenizer(path, key), max_new_tokens, batch_size, chat)

