"""Write a toy-size checkpoint directory shaped like a researcher's local Qwen2.5 / Llama-3 download.

    python tools/make_tiny_checkpoint.py OUT [--family qwen2|llama] [--vocab-size 512] [--seed 0]
                                             [--corpus FILE] [--no-chat-template]

Real pieces at toy size, so tests exercise the code paths a real checkpoint takes (byte-level BPE,
ChatML / Llama-3 chat turns, eos ids that differ from the tokenizer's end of text):
    1. a corpus: `texts` (or FILE, one text per line), else a built-in one generated from `seed`:
       English arithmetic word problems with worked answers, and LaTeX snippets;
    2. a byte-level BPE tokenizer trained on it with `tokenizers`: Qwen2's split regex (digits one
       by one; Llama-3 groups up to three), ByteLevel, no unk (every byte is in the alphabet);
    3. the family's special tokens after the learned vocabulary, eos / pad / bos set the way the
       instruct models set them, and a chat template with a default system prompt:
           qwen2  <|endoftext|> pad, <|im_start|> / <|im_end|> (eos) ChatML turns, no bos
           llama  <|begin_of_text|> bos (added when encoding), header tokens, <|eot_id|> (eos), no pad
    4. a randomly initialised Qwen2ForCausalLM / LlamaForCausalLM (hidden 64, 2 layers, 1024
       positions) with the vocabulary padded to `vocab_size`, saved in bfloat16 safetensors with
       save_pretrained, plus a generation_config whose eos ids are the end of turn and end of text.
Everything is a pure function of the arguments: the same seed writes the same files.
`train_bpe` (step 2) and `save_tokenizer` are shared with tools/make_tiny_vlm_checkpoint.py.
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

import torch
from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
from transformers import (GenerationConfig, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast, Qwen2Config,
                          Qwen2ForCausalLM)
from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX

FAMILIES = ("qwen2", "llama")
DEFAULT_SYSTEM = "You are a helpful assistant."
MAX_POSITIONS = 1024
# Llama-3 splits like Qwen2 except that numbers stay in runs of up to three digits.
LLAMA3_REGEX = PRETOKENIZE_REGEX.replace(r"\p{N}", r"\p{N}{1,3}")

QWEN_SPECIALS = {"end_of_text": "<|endoftext|>", "turn_start": "<|im_start|>", "turn_end": "<|im_end|>"}
LLAMA_SPECIALS = {"bos": "<|begin_of_text|>", "end_of_text": "<|end_of_text|>", "header_start": "<|start_header_id|>",
                  "header_end": "<|end_header_id|>", "turn_end": "<|eot_id|>"}

# ChatML, as Qwen2.5-Instruct writes it: a system turn (a default one when the messages have none),
# every message as <|im_start|>role\ncontent<|im_end|>\n, then the assistant's header when asked.
CHATML_TEMPLATE = (
    "{%- if not messages or messages[0]['role'] != 'system' -%}"
    "{{- '<|im_start|>system\\n" + DEFAULT_SYSTEM + "<|im_end|>\\n' -}}"
    "{%- endif -%}"
    "{%- for message in messages -%}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}"
)
# Llama-3 turns: bos once, a header per message, the content trimmed, <|eot_id|> after each.
LLAMA3_TEMPLATE = (
    "{{- bos_token -}}"
    "{%- if not messages or messages[0]['role'] != 'system' -%}"
    "{{- '<|start_header_id|>system<|end_header_id|>\\n\\n" + DEFAULT_SYSTEM + "<|eot_id|>' -}}"
    "{%- endif -%}"
    "{%- for message in messages -%}"
    "{{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' + message['content'] | trim"
    " + '<|eot_id|>' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' -}}{%- endif -%}"
)

# ------------------------------------------------------------------------------------------------
# 1. The built-in corpus

NAMES = ["Mia", "Tom", "Ava", "Leo", "Zoe", "Sam", "Noah", "Emma", "Liam", "Ella"]
ITEMS = ["apples", "pencils", "marbles", "books", "cookies", "stickers", "coins", "cards"]


def word_problem(rng: random.Random) -> str:
    name, other, item = rng.choice(NAMES), rng.choice(NAMES), rng.choice(ITEMS)
    a, b = rng.randint(2, 99), rng.randint(1, 50)
    if rng.random() < 0.5:
        question = f"{name} has {a} {item}. {other} gives {name} {b} more. How many {item} does {name} have now?"
        work, answer = f"{a} + {b} = {a + b}", a + b
    else:
        a = max(a, b)
        question = f"{name} has {a} {item} and gives {b} to {other}. How many {item} are left?"
        work, answer = f"{a} - {b} = {a - b}", a - b
    return f"Question: {question}\nAnswer: Let's think step by step. {work}. The answer is {answer}."


def latex_snippet(rng: random.Random) -> str:
    a, b, c, d = (rng.randint(1, 12) for _ in range(4))
    n = rng.randint(2, 20)
    snippets = [
        f"Compute $\\frac{{{a}}}{{{b}}} + \\frac{{{c}}}{{{d}}} = \\frac{{{a * d + b * c}}}{{{b * d}}}$.",
        f"Expand: \\[ (x + {a})(x + {b}) = x^2 + {a + b}x + {a * b} \\]",
        f"We have $\\sqrt{{{a * a}}} = {a}$, so the final answer is $\\boxed{{{a}}}$.",
        f"\\begin{{aligned}} \\sum_{{k=1}}^{{{n}}} k &= \\frac{{{n}({n}+1)}}{{2}} \\\\ &= {n * (n + 1) // 2} "
        "\\end{aligned}",
        f"Solve ${a}x + {b} = {a * c + b}$. Subtract {b}: ${a}x = {a * c}$, so $x = {c}$.",
        f"The area of a circle of radius {a} is $\\pi r^2 = {a * a}\\pi$ \u2248 {round(3.14159 * a * a, 2)}.",
        f"Since {a} \u00d7 {b} = {a * b} and {a * b} \u00f7 {b} = {a}, the check passes \u2014 done.",
    ]
    return rng.choice(snippets)


def default_corpus(seed: int = 0, n: int = 600) -> list[str]:
    """`n` short documents: word problems with worked answers and LaTeX snippets, in a seeded order."""
    rng = random.Random(f"tiny-corpus/{seed}")
    return [word_problem(rng) if rng.random() < 0.5 else latex_snippet(rng) for _ in range(n)]


# ------------------------------------------------------------------------------------------------
# 2-3. The tokenizer


def train_bpe(texts: list[str], family: str, vocab_size: int, specials: list[str]) -> Tokenizer:
    """A byte-level BPE (`tokenizers`) trained on `texts` with the family's normaliser and split regex,
    `specials` appended after the learned vocabulary; `vocab_size` counts both. Also used by
    tools/make_tiny_vlm_checkpoint.py."""
    core = Tokenizer(models.BPE(unk_token=None, fuse_unk=False, byte_fallback=False))
    if family == "qwen2":
        core.normalizer = normalizers.NFC()  # Qwen2 normalises; Llama-3 does not
    regex = PRETOKENIZE_REGEX if family == "qwen2" else LLAMA3_REGEX
    core.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(regex), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    core.decoder = decoders.ByteLevel()
    # Specials are left out of training so they come after the learned vocabulary, as in the real models.
    trainer = trainers.BpeTrainer(vocab_size=vocab_size - len(specials), special_tokens=[], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    core.train_from_iterator(texts, trainer)
    core.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in specials])
    return core


def train_tokenizer(texts: list[str], family: str, vocab_size: int, chat_template: bool) -> PreTrainedTokenizerFast:
    """A byte-level BPE trained on `texts`, with the family's specials, eos/pad/bos and chat template."""
    specials = QWEN_SPECIALS if family == "qwen2" else LLAMA_SPECIALS
    core = train_bpe(texts, family, vocab_size, list(specials.values()))
    if family == "qwen2":
        tok = PreTrainedTokenizerFast(tokenizer_object=core, eos_token=specials["turn_end"],
                                      pad_token=specials["end_of_text"],
                                      extra_special_tokens=[specials["turn_start"]])
        template = CHATML_TEMPLATE
    else:
        others = [t for k, t in specials.items() if k not in ("bos", "turn_end")]
        tok = PreTrainedTokenizerFast(tokenizer_object=core, bos_token=specials["bos"], eos_token=specials["turn_end"],
                                      add_bos_token=True, extra_special_tokens=others)
        template = LLAMA3_TEMPLATE
    if chat_template:
        tok.chat_template = template
    tok.model_max_length = MAX_POSITIONS
    return tok


# ------------------------------------------------------------------------------------------------
# 4. The model


def build_model(family: str, tok: PreTrainedTokenizerFast, vocab_size: int, seed: int):
    specials = QWEN_SPECIALS if family == "qwen2" else LLAMA_SPECIALS
    ids = {name: tok.convert_tokens_to_ids(token) for name, token in specials.items()}
    shape = dict(vocab_size=max(vocab_size, len(tok)), hidden_size=64, intermediate_size=176, num_hidden_layers=2,
                 num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=MAX_POSITIONS, hidden_act="silu",
                 initializer_range=0.02, attention_dropout=0.0, use_cache=True, dtype="bfloat16")
    if family == "qwen2":  # Qwen2.5-0.5B-Instruct's fields at toy size
        config = Qwen2Config(**shape, rms_norm_eps=1e-6, tie_word_embeddings=True, use_sliding_window=False,
                             rope_parameters={"rope_type": "default", "rope_theta": 1000000.0},
                             bos_token_id=ids["end_of_text"], eos_token_id=ids["turn_end"])
        eos, pad, bos = [ids["turn_end"], ids["end_of_text"]], ids["end_of_text"], ids["end_of_text"]
    else:  # Llama-3.x-Instruct's fields at toy size
        config = LlamaConfig(**shape, rms_norm_eps=1e-5, tie_word_embeddings=False, mlp_bias=False,
                             attention_bias=False,
                             rope_parameters={"rope_type": "default", "rope_theta": 500000.0},
                             bos_token_id=ids["bos"], eos_token_id=[ids["end_of_text"], ids["turn_end"]])
        eos, pad, bos = [ids["end_of_text"], ids["turn_end"]], None, ids["bos"]
    torch.manual_seed(seed)
    model = (Qwen2ForCausalLM if family == "qwen2" else LlamaForCausalLM)(config).to(torch.bfloat16)
    model.generation_config = GenerationConfig(bos_token_id=bos, eos_token_id=eos, pad_token_id=pad)
    return model


def make_tiny_checkpoint(out_dir: str | Path, family: str = "qwen2", texts: list[str] | None = None,
                         vocab_size: int = 512, chat_template: bool = True, seed: int = 0) -> Path:
    """Write model + tokenizer into `out_dir` (created); returns it. See the module docstring for the layout."""
    if family not in FAMILIES:
        raise ValueError(f"family must be one of {', '.join(FAMILIES)}, not {family!r}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tok = train_tokenizer(texts if texts is not None else default_corpus(seed), family, vocab_size, chat_template)
    build_model(family, tok, vocab_size, seed).save_pretrained(str(out))
    save_tokenizer(tok, out, "Qwen2Tokenizer" if family == "qwen2" else "PreTrainedTokenizerFast")
    return out


def save_tokenizer(tok: PreTrainedTokenizerFast, out: Path, tokenizer_class: str) -> None:
    """save_pretrained, naming the class the real checkpoints name (transformers would write its
    generic backend class). Also used by tools/make_tiny_vlm_checkpoint.py."""
    tok.save_pretrained(str(out))
    config_file = out / "tokenizer_config.json"
    tok_config = json.loads(config_file.read_text())
    tok_config["tokenizer_class"] = tokenizer_class
    config_file.write_text(json.dumps(tok_config, indent=2, ensure_ascii=False) + "\n")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--family", choices=FAMILIES, default="qwen2")
    parser.add_argument("--vocab-size", type=int, default=512)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--corpus", type=Path, help="train the tokenizer on this file, one text per line")
    parser.add_argument("--no-chat-template", action="store_true")
    args = parser.parse_args(argv)
    texts = [line for line in args.corpus.read_text().splitlines() if line.strip()] if args.corpus else None
    out = make_tiny_checkpoint(args.out, args.family, texts, args.vocab_size, not args.no_chat_template, args.seed)
    print(f"wrote a tiny {args.family} checkpoint to {out} (model.init_from={out})")


if __name__ == "__main__":
    main()
