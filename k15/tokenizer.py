"""Tokenizers: the synthetic world's own (built offline, saved in Hugging Face format) or any local one.

The synthetic tokenizer has one token per character (so one per digit), plus special tokens for
the structure of an answer (`<think>`, `</think>`, `<answer>`, `</answer>`), image placeholders
(`<image>`) and the word `wait` as one token. Every path in k15 takes a `PreTrainedTokenizerFast`,
so a user's own HF tokenizer directory goes through the same code.
"""

from __future__ import annotations

import string
from pathlib import Path

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
from transformers import AutoTokenizer, PreTrainedTokenizerBase, PreTrainedTokenizerFast

from k15.errors import CheckpointError

PAD, BOS, EOS, UNK = "<pad>", "<bos>", "<eos>", "<unk>"
STRUCTURE_TOKENS = ["<think>", "</think>", "<answer>", "</answer>", "<image>"]
WORD_TOKENS = ["wait"]
CHARACTERS = string.digits + "+-*/=,;:.()?! " + string.ascii_lowercase


def build_synthetic_tokenizer() -> PreTrainedTokenizerFast:
    specials = [PAD, BOS, EOS, UNK, *STRUCTURE_TOKENS]
    vocab = {tok: i for i, tok in enumerate(specials + WORD_TOKENS + list(CHARACTERS))}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    # Added tokens (specials, "wait") are matched first; everything else splits into characters.
    core.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    core.decoder = decoders.Fuse()
    tok = PreTrainedTokenizerFast(
        tokenizer_object=core,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        unk_token=UNK,
        additional_special_tokens=STRUCTURE_TOKENS,
    )
    tok.add_tokens(WORD_TOKENS)
    tok.padding_side = "right"
    return tok


def load_tokenizer(path: str | Path | None = None) -> PreTrainedTokenizerBase:
    """The tokenizer saved in `path` (a local HF directory), or the synthetic one when `path` is None."""
    if path is None:
        return build_synthetic_tokenizer()
    path = Path(path)
    if not path.is_dir():
        raise CheckpointError(f"tokenizer directory not found: {path}")
    try:
        tok = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"cannot load a tokenizer from {path}: {str(exc).splitlines()[0]}") from None
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def stop_token_ids(tok: PreTrainedTokenizerBase) -> list[int]:
    """Generation stops at the end of the answer block, or at end-of-sequence."""
    ids = []
    end_answer = tok.convert_tokens_to_ids("</answer>")
    if end_answer is not None and end_answer != tok.unk_token_id:
        ids.append(end_answer)
    if tok.eos_token_id is not None:
        ids.append(tok.eos_token_id)
    return ids


def encode(tok: PreTrainedTokenizerBase, text: str) -> list[int]:
    return tok.encode(text, add_special_tokens=False)


def prompt_ids(tok: PreTrainedTokenizerBase, prompt: str) -> list[int]:
    """A prompt as the model sees it at the start of a response: `<bos>` (when the tokenizer has one) + text."""
    bos = [tok.bos_token_id] if tok.bos_token_id is not None else []
    return bos + encode(tok, prompt)
