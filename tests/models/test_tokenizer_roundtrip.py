"""Tokenizers survive save -> load in every model family k15 writes, with the synthetic world's ids unchanged.

transformers picks the tokenizer class from the saved model config and some classes rebuild the
tokenizer instead of reading tokenizer.json (a Qwen2 directory always loads as Qwen2Tokenizer).
Each directory here is reloaded with plain AutoTokenizer and with k15's load_tokenizer, and must
give the ids of the tokenizer that was saved, for the synthetic world and for arbitrary text.
"""

import random
import re
import string

import pytest
import torch
from transformers import AutoTokenizer

from k15.config import ModelConfig, WorldConfig
from k15.errors import CheckpointError
from k15.models.decoder import EXPORT_PROBE, build_decoder, export, load_model_and_tokenizer
from k15.models.projector import ProjectorConfig
from k15.models.vision import VisionConfig
from k15.models.vlm import build_vlm, load_vlm, save_vlm
from k15.synthetic.arithmetic import heldout_set, sample_problems
from k15.synthetic.corpus import pretrain_documents, sft_examples
from k15.synthetic.hackable import planted_prompt_set
from k15.synthetic.images import GENERATORS, vision_docs
from k15.synthetic.traces import long_trace, text_of
from k15.tokenizer import build_synthetic_tokenizer, load_tokenizer, unencodable_characters
from tools.make_tiny_checkpoint import make_tiny_checkpoint

# The synthetic vocabulary in its historical id order: recorded results depend on these ids.
HISTORICAL = (["<pad>", "<bos>", "<eos>", "<unk>", "<think>", "</think>", "<answer>", "</answer>", "<image>", "wait"]
              + list("0123456789+-*/=,;:.()?! abcdefghijklmnopqrstuvwxyz"))
MATCHED_FIRST = re.compile("|".join(re.escape(t) for t in HISTORICAL[:10]))
ARBITRARY = [
    "Hello World", "What is 2?", "ÉCOLE naïve café – “quotes” ‘single’", "e\u0301 (decomposed) vs \u00e9",
    "line one\nline two\r\nthree\n\n\nend", "tab\there\t\tand  double  spaces   ",
    "😀🚀 emoji 👩‍👩‍👧", "日本語の文章",
    "<think>Wait, WAIT, waiting</think>", "x\u00a0y\u2003z", "\\frac{3}{4} $x^2$ {braces} [brackets] #hash @at ~tilde",
    "<answer>12</answer><eos><pad>", "   leading and trailing   ", "",
]
TEXT = dict(hidden_size=32, num_layers=1, num_heads=2, num_kv_heads=2, intermediate_size=32, max_seq_len=64)
VISION = dict(patch_size=8, hidden_size=32, num_layers=1, num_heads=2, intermediate_size=32, max_side=112,
              max_pixels=4096)


def reference_ids(text: str) -> list[int]:
    """The historical encoding, written out: specials and "wait" first, then one id per known character."""
    ids, at = [], 0
    for match in [*MATCHED_FIRST.finditer(text), None]:
        end = match.start() if match else len(text)
        ids += [HISTORICAL.index(c) for c in text[at:end] if c in HISTORICAL[10:]]
        if match:
            ids.append(HISTORICAL.index(match.group()))
            at = match.end()
    return ids


def world_sample() -> list[str]:
    """Every kind of text the synthetic world feeds the tokenizer: documents, prompts, SFT pieces, long traces with
    ` wait `, answers, planted prompts (including spaced-out duplicates), vision prompts and responses."""
    world = WorldConfig(max_level=9, error_rate=0.3)
    texts = pretrain_documents(world, 300, {"raw": 1, "short": 1, "long": 2}, seed=0)
    for prompt, pieces in sft_examples(world, 300, long_fraction=0.6, seed=0):
        texts += [prompt, prompt + text_of(pieces), *(p.text for p in pieces)]
    rng = random.Random(0)
    hard = sample_problems(60, "train", range(7, 10), 0.1, 1)
    texts += [p.prompt + text_of(long_trace(p, rng, error_rate=0.9)) for p in hard]
    texts += [p.prompt for p in heldout_set(range(1, 10), 5, 0.1, 0)]
    texts += [text for r in planted_prompt_set(seed=0) for text in (r.prompt, r.answer)]
    for kind in GENERATORS:
        for doc in vision_docs(kind, 4, seed=0):
            texts += [s for s in doc.segments if isinstance(s, str)] + [doc.response]
    return texts


@pytest.fixture(scope="module")
def tok():
    return build_synthetic_tokenizer()


@pytest.fixture(scope="module")
def world():
    return world_sample()


@pytest.fixture(scope="module")
def family_dirs(tmp_path_factory, tok):
    """One saved directory per layout k15 writes."""
    torch.manual_seed(0)
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("families")
    dirs = {f: export(build_decoder(ModelConfig(family=f, **TEXT), tok), tok, root / f) for f in ("llama", "qwen2")}
    layouts = {"llava": ("llama", dict(merge=1)), "mistral3": ("qwen2", dict(merge=2)),
               "k15_vlm": ("qwen2", dict(kind="embedding_softmax"))}
    for name, (family, projector) in layouts.items():
        vlm = build_vlm(ModelConfig(family=family, **TEXT), tok, VisionConfig(**VISION), ProjectorConfig(**projector))
        dirs[name] = save_vlm(vlm, tok, root / name)
    return dirs


def test_synthetic_ids_are_the_historical_ones(tok, world):
    assert len(tok) == len(HISTORICAL) and tok.convert_ids_to_tokens(list(range(len(HISTORICAL)))) == [
        "Ġ" if t == " " else t for t in HISTORICAL]  # the space is spelled in its byte-level form
    ids = tok(world, add_special_tokens=False)["input_ids"]
    assert sum(map(len, ids)) > 20_000 and sum(" wait " in t for t in world) > 50
    assert ids == [reference_ids(t) for t in world]
    assert tok.encode("7-2=5 wait 7-2=5<answer>5</answer>", add_special_tokens=False) == [
        17, 21, 12, 24, 15, 33, 9, 33, 17, 21, 12, 24, 15, 6, 15, 7]
    assert tok.batch_decode(ids) == world  # decoding gives the text back


def test_out_of_alphabet_characters_drop_and_are_reported(tok):
    assert tok.encode("Hi there!\n", add_special_tokens=False) == reference_ids("i there!")
    assert unencodable_characters(tok, "Héllo\tworld\n😀 <think>wait</think>") == {"H", "é", "\t", "\n", "😀"}
    assert unencodable_characters(tok, "7-2=<think>1:7-2=5</think><answer>5</answer> wait") == set()
    assert unencodable_characters(tok, "") == set()


@pytest.mark.parametrize("layout", ["llama", "qwen2", "llava", "mistral3", "k15_vlm"])
def test_every_family_reloads_to_the_same_ids(family_dirs, tok, world, layout):
    path = family_dirs[layout]
    texts = world + ARBITRARY + [EXPORT_PROBE, string.printable, "".join(map(chr, range(0x20, 0x250)))]
    expected = tok(texts, add_special_tokens=False)["input_ids"]
    with_specials = tok(texts)["input_ids"]
    for again in (AutoTokenizer.from_pretrained(path, local_files_only=True), load_tokenizer(path)):
        assert again(texts, add_special_tokens=False)["input_ids"] == expected, type(again).__name__
        assert again(texts)["input_ids"] == with_specials
        assert again.batch_decode(expected) == tok.batch_decode(expected)
        assert again.batch_decode(again(world, add_special_tokens=False)["input_ids"]) == world
        assert len(again) == len(tok) and again.all_special_ids == tok.all_special_ids
        assert (again.bos_token_id, again.eos_token_id, again.pad_token_id) == (tok.bos_token_id, tok.eos_token_id,
                                                                               tok.pad_token_id)
        assert unencodable_characters(again, "Ab\n<answer>") == {"A", "\n"}
    if layout in ("llava", "mistral3", "k15_vlm"):
        assert load_vlm(path)[1]("3 wait 4")["input_ids"] == tok("3 wait 4")["input_ids"]


def test_qwen2_family_rebuild_is_what_the_synthetic_tokenizer_already_is(family_dirs):
    assert type(AutoTokenizer.from_pretrained(family_dirs["qwen2"])).__name__ == "Qwen2Tokenizer"


def test_a_real_byte_level_tokenizer_round_trips_through_export(tmp_path):
    source = make_tiny_checkpoint(tmp_path / "user", "qwen2")
    cfg = ModelConfig(family="qwen2", init_from=str(source))
    model, tok = load_model_and_tokenizer(cfg)
    out = export(model, tok, tmp_path / "export")
    texts = ARBITRARY + world_sample()[:200] + ["Mia has 123 apples — $\\frac{3}{4}$"]
    for again in (AutoTokenizer.from_pretrained(out), load_tokenizer(out)):
        assert type(again).__name__ == "Qwen2Tokenizer"
        assert again(texts, add_special_tokens=False)["input_ids"] == tok(texts, add_special_tokens=False)["input_ids"]
        assert again.batch_decode(again(texts, add_special_tokens=False)["input_ids"]) == [
            t.replace("e\u0301", "\u00e9") for t in texts]  # NFC, as Qwen2 normalises; nothing is lost
        assert unencodable_characters(again, "".join(ARBITRARY)) == set()
        assert again.chat_template == tok.chat_template and again.eos_token == "<|im_end|>"


def test_export_refuses_a_tokenizer_its_family_would_change(tmp_path, tok):
    """The pre-fix synthetic tokenizer (WordLevel, spaces as " ") lost its spaces in a Qwen2 directory."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.WordLevel({t: i for i, t in enumerate(HISTORICAL)}, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    core.decoder = decoders.Fuse()
    old = PreTrainedTokenizerFast(tokenizer_object=core, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>",
                                  unk_token="<unk>", additional_special_tokens=HISTORICAL[4:9])
    old.add_tokens(["wait"])
    model = build_decoder(ModelConfig(family="qwen2", **TEXT), tok)
    with pytest.raises(CheckpointError) as info:
        export(model, old, tmp_path / "q")
    message = str(info.value)
    assert f"the tokenizer saved in {tmp_path / 'q'} reloads as Qwen2Tokenizer with different ids" in message
    assert "TokenizersBackend" in message and "\n" not in message
    export(build_decoder(ModelConfig(family="llama", **TEXT), tok), old, tmp_path / "l")  # llama reads it as written
