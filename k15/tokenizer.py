"""Tokenizers: the synthetic world's own (built offline, saved in Hugging Face format) or any local one.

The synthetic tokenizer has one token per character (so one per digit), plus special tokens for
the structure of an answer (`<think>`, `</think>`, `<answer>`, `</answer>`), image placeholders
(`<image>`) and the word `wait` as one token. Every path in k15 takes a `PreTrainedTokenizerFast`,
so a user's own HF tokenizer directory goes through the same code.

Why it is a byte-level BPE without merges. transformers rebuilds some families' tokenizers from the
saved vocabulary instead of reading tokenizer.json as written (a Qwen2 directory always loads as
`Qwen2Tokenizer`: NFC, Qwen2's split regex, ByteLevel). A tokenizer survives that rebuild only if
it already is that pipeline, so the synthetic one is built as:
    1. the vocabulary of the synthetic world, in its historical id order (recorded results depend
       on it), with every character written in its byte-level form (only the space changes: "Ġ");
    2. a BPE model with no merges and no unk token: each character is its own token, and a
       character outside the alphabet is dropped -- exactly what the rebuilt tokenizer does;
    3. the normalizer, pre-tokenizer and decoder Qwen2Tokenizer builds (NFC, split regex, ByteLevel);
    4. specials and `wait` as added tokens, matched before everything else.
Llama / LLaVA / Mistral3 directories read tokenizer.json as written, so the same pipeline comes back.
Dropped characters are silent, so data loaders ask `unencodable_characters` first.
"""

from __future__ import annotations

import string
import weakref
from pathlib import Path

from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers
from transformers import AutoTokenizer, PreTrainedTokenizerBase, PreTrainedTokenizerFast
from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX

from k15.errors import CheckpointError
from k15.models.checkpoint_dir import check_tokenizer_dir

PAD, BOS, EOS, UNK = "<pad>", "<bos>", "<eos>", "<unk>"
STRUCTURE_TOKENS = ["<think>", "</think>", "<answer>", "</answer>", "<image>"]
WORD_TOKENS = ["wait"]
CHARACTERS = string.digits + "+-*/=,;:.()?! " + string.ascii_lowercase

# The byte-level pre-tokenizer alone: maps text to the byte-level characters the BPE vocabulary uses.
_BYTE_LEVEL = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)


def byte_level(text: str) -> str:
    """`text` as a byte-level BPE vocabulary spells it (" " -> "Ġ", "\\n" -> "Ċ", printable ASCII unchanged)."""
    return "".join(piece for piece, _ in _BYTE_LEVEL.pre_tokenize_str(text))


def _qwen2_pipeline(core: Tokenizer) -> Tokenizer:
    """The normalizer, pre-tokenizer and decoder Qwen2Tokenizer builds around its BPE model."""
    core.normalizer = normalizers.NFC()
    core.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    core.decoder = decoders.ByteLevel()
    return core


def build_synthetic_tokenizer() -> PreTrainedTokenizerFast:
    specials = [PAD, BOS, EOS, UNK, *STRUCTURE_TOKENS]
    # Ids are the historical ones: specials, "wait", then the characters (the space stays at its id, spelled "Ġ").
    vocab = {tok: i for i, tok in enumerate(specials + WORD_TOKENS + [byte_level(c) for c in CHARACTERS])}
    # The options a Qwen2 rebuild passes, so both are the same model: no unk (unknown characters drop), no fusing.
    bpe = models.BPE(vocab=vocab, merges=[], dropout=None, unk_token=None, continuing_subword_prefix="",
                     end_of_word_suffix="", fuse_unk=False, byte_fallback=False)
    core = _qwen2_pipeline(Tokenizer(bpe))
    tok = PreTrainedTokenizerFast(
        tokenizer_object=core,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        unk_token=UNK,  # never produced by encoding; kept so a lookup of an unknown token string says "unk"
        additional_special_tokens=STRUCTURE_TOKENS,
    )
    tok.add_tokens(WORD_TOKENS)
    tok.padding_side = "right"
    return tok


def unencodable_characters(tok: PreTrainedTokenizerBase, text: str) -> set[str]:
    """The characters of `text` that `tok` drops or maps to its unk token (empty for a full byte-level BPE).

    Steps: encode every distinct character alone (remembered per tokenizer, so a data set costs one
    encode per character): no ids, the unk id, or ids that decode to a broken byte sequence (a
    multi-byte character only partly in the vocabulary) mean it is lost; then forgive the ones that
    occur only inside added tokens (the `<` of `<think>`).
    """
    size, known = _CHARACTER_VERDICTS.get(tok, (None, {}))
    if size != len(tok):  # new, or tokens were added since
        known = {}
        _CHARACTER_VERDICTS[tok] = (len(tok), known)
    lost = set()
    for char in set(text):
        if char not in known:
            ids = encode(tok, char)
            broken = "\ufffd" in tok.decode(ids) and char != "\ufffd"
            known[char] = bool(ids) and tok.unk_token_id not in ids and not broken
        if not known[char]:
            lost.add(char)
    if not lost or not tok.get_added_vocab():
        return lost
    outside = list(text)
    enc = tok(text, add_special_tokens=False, return_offsets_mapping=True)
    added = set(tok.get_added_vocab().values())
    for token_id, (start, end) in zip(enc["input_ids"], enc["offset_mapping"]):
        if token_id in added:
            outside[start:end] = [""] * (end - start)
    return lost & set(outside)


_CHARACTER_VERDICTS = weakref.WeakKeyDictionary()  # tokenizer -> (its size, {character: representable})


def check_tokenizer_roundtrip(tok: PreTrainedTokenizerBase, path: str | Path, probe: str) -> None:
    """CheckpointError unless the tokenizer saved in `path` gives `tok`'s ids for `probe` when
    reloaded with plain AutoTokenizer (some families rebuild the tokenizer on load)."""
    try:
        again = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"the tokenizer saved in {path} does not reload: {str(exc).splitlines()[0]}") from None
    if encode(again, probe) != encode(tok, probe):
        raise CheckpointError(
            f"the tokenizer saved in {path} reloads as {type(again).__name__} with different ids than the "
            f"{type(tok).__name__} that was saved (probe {probe!r}); this model family rebuilds it on load"
        )


def load_tokenizer(path: str | Path | None = None, key: str = "model.tokenizer") -> PreTrainedTokenizerBase:
    """The tokenizer saved in `path` (a local HF directory), or the synthetic one when `path` is None.
    `key` is the setting that named the directory, for the one-line error when it is unusable."""
    if path is None:
        return build_synthetic_tokenizer()
    check_tokenizer_dir(path, key)
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


def char_token_ids(tok: PreTrainedTokenizerBase, chars: str | list[str]) -> list[int | None]:
    """The one token id of each character (None when it is not exactly one token). Use this rather than
    `convert_tokens_to_ids(char)`: byte-level vocabularies spell characters differently (" " is "Ġ")."""
    out = []
    for char in chars:
        ids = encode(tok, char)
        out.append(ids[0] if len(ids) == 1 and ids[0] != tok.unk_token_id else None)
    return out


def prompt_ids(tok: PreTrainedTokenizerBase, prompt: str) -> list[int]:
    """A prompt as the model sees it at the start of a response: `<bos>` (when the tokenizer has one) + text."""
    bos = [tok.bos_token_id] if tok.bos_token_id is not None else []
    return bos + encode(tok, prompt)
