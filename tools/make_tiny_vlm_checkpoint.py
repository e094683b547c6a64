"""Write a toy-size checkpoint directory shaped like a researcher's Qwen2.5-VL / Qwen2-VL / LLaVA-1.5 /
Mistral-Small-3.1 (Mistral3) / Pixtral-12B (LLaVA with a Pixtral tower) download.

    python tools/make_tiny_vlm_checkpoint.py OUT --family qwen2_5_vl|qwen2_vl|llava|mistral3|llava_pixtral [--seed 0]

    from tools.make_tiny_vlm_checkpoint import make_tiny_vlm_checkpoint
    path = make_tiny_vlm_checkpoint(tmp_path / "vlm", "qwen2_5_vl")

Real pieces at toy size, so tests exercise the code paths a real checkpoint takes:
    1. a byte-level BPE tokenizer trained with `tokenizers` on tools/make_tiny_checkpoint.py's
       built-in corpus (its `train_bpe`), the family's special tokens after the learned vocabulary:
           Qwen   <|endoftext|> (pad), <|im_start|>, <|im_end|> (eos), <|vision_start|>, <|vision_end|>,
                  <|image_pad|> (the image token), <|video_pad|>; no bos
           LLaVA  <s> (bos, added when encoding), </s> (eos), <image> (the image token), <pad> (pad)
           Mistral3 / Pixtral-LLaVA  <s> (bos, added when encoding), </s> (eos), <pad> (pad), [INST],
                  [/INST], [SYSTEM_PROMPT], [/SYSTEM_PROMPT], [IMG] (the image token), [IMG_BREAK],
                  [IMG_END] (PixtralProcessor writes an image as rows of [IMG], each row ended by
                  [IMG_BREAK], the last by [IMG_END])
    2. a chat template of the family's shape; message content is a string or a list of parts
       ({"type": "image"}, {"type": "text", "text": ...}):
           Qwen   ChatML turns, a default system turn, <|vision_start|><|image_pad|><|vision_end|> per image
           LLaVA  "USER: <image>\\n... ASSISTANT:" (images first in a turn, then its texts)
           Mistral3 / Pixtral-LLaVA  Mistral-Small-3.1's: "<s>[INST]...[IMG]...[/INST]" (each image part is
                  one [IMG] in place; a system turn, when given, as [SYSTEM_PROMPT]...[/SYSTEM_PROMPT])
    3. the image processor's files as the real downloads have them:
           Qwen   preprocessor_config.json (Qwen2VLImageProcessor: patch 8, merge 2, min_pixels 32*32,
                  max_pixels 64*64, so images stay between 4 and 16 image tokens)
           LLaVA  preprocessor_config.json (CLIPImageProcessor: shortest edge 32, 32x32 center crop)
                  and processor_config.json (LlavaProcessor: patch 8, "default" feature selection,
                  one extra CLS token), so AutoProcessor builds a LlavaProcessor
           Mistral3 / Pixtral-LLaVA  preprocessor_config.json (PixtralImageProcessor: patch 8, the
                  tower's, as Mistral-Small-3.1 writes its 14; longest edge 64) and processor_config.json
                  (PixtralProcessor: patch 8, spatial_merge_size 2 for Mistral3 / 1 for Pixtral-LLaVA,
                  the three image token names); the processor asks its image processor for sides that
                  are multiples of patch x merge (16 / 8 px)
    4. a randomly initialised model (text: hidden 64, 2 layers, 4 heads of 16, 2 kv heads, 1024
       positions; vision: depth 2, hidden 32, patch 8; Qwen: merge 2, M-RoPE sections [2, 3, 3];
       LLaVA: a CLIP tower reading 32x32 images, 16 image tokens; Mistral3: a Pixtral tower of any
       size up to 64 px, a 2x2 patch merge, a Mistral text model without sliding window; Pixtral-LLaVA:
       the same tower without a merge, LLaVA's projector with bias) saved with save_pretrained in
       bfloat16 safetensors (Qwen2-VL / Qwen2.5-VL / Mistral3 ship bfloat16; LLaVA-1.5 ships float16,
       we use bfloat16 for it too: the same dtype throughout), plus generation_config.json.
The config's image_token_id is the tokenizer's id of the image token; the vocabulary is the
tokenizer's, padded to `vocab_size`. Everything is a pure function of the arguments: the same seed
writes the same files.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
from transformers import (CLIPVisionConfig, GenerationConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration,
                          Mistral3Config, Mistral3ForConditionalGeneration, MistralConfig, PixtralVisionConfig,
                          PreTrainedTokenizerFast, Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration, Qwen2VLConfig,
                          Qwen2VLForConditionalGeneration)

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script, `tools` is importable from the repository root
    sys.path.insert(0, str(ROOT))

from tools.make_tiny_checkpoint import (DEFAULT_SYSTEM, MAX_POSITIONS, default_corpus, save_tokenizer,  # noqa: E402
                                        train_bpe)

FAMILIES = ("qwen2_5_vl", "qwen2_vl", "llava", "mistral3", "llava_pixtral")
PIXTRAL_FAMILIES = ("mistral3", "llava_pixtral")  # Pixtral towers, Mistral's tokenizer and PixtralProcessor
CLIP_MEAN, CLIP_STD = [0.48145466, 0.4578275, 0.40821073], [0.26862954, 0.26130258, 0.27577711]

QWEN_SPECIALS = {"end_of_text": "<|endoftext|>", "turn_start": "<|im_start|>", "turn_end": "<|im_end|>",
                 "vision_start": "<|vision_start|>", "vision_end": "<|vision_end|>", "image": "<|image_pad|>",
                 "video": "<|video_pad|>"}
LLAVA_SPECIALS = {"bos": "<s>", "eos": "</s>", "image": "<image>", "pad": "<pad>"}
MISTRAL_SPECIALS = {"bos": "<s>", "eos": "</s>", "pad": "<pad>", "inst": "[INST]", "inst_end": "[/INST]",
                    "system": "[SYSTEM_PROMPT]", "system_end": "[/SYSTEM_PROMPT]", "image": "[IMG]",
                    "image_break": "[IMG_BREAK]", "image_end": "[IMG_END]"}

# Qwen2-VL-Instruct's shape: ChatML turns, a default system turn when the messages have none, each
# image part as <|vision_start|><|image_pad|><|vision_end|> in place, text parts as they are.
QWEN_VL_TEMPLATE = (
    "{%- if not messages or messages[0]['role'] != 'system' -%}"
    "{{- '<|im_start|>system\\n" + DEFAULT_SYSTEM + "<|im_end|>\\n' -}}"
    "{%- endif -%}"
    "{%- for message in messages -%}"
    "{{- '<|im_start|>' + message['role'] + '\\n' -}}"
    "{%- if message['content'] is string -%}{{- message['content'] -}}"
    "{%- else -%}{%- for part in message['content'] -%}"
    "{%- if part['type'] == 'image' -%}{{- '<|vision_start|><|image_pad|><|vision_end|>' -}}"
    "{%- elif part['type'] == 'video' -%}{{- '<|vision_start|><|video_pad|><|vision_end|>' -}}"
    "{%- elif part['type'] == 'text' -%}{{- part['text'] -}}"
    "{%- endif -%}"
    "{%- endfor -%}{%- endif -%}"
    "{{- '<|im_end|>\\n' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}"
)
# LLaVA-1.5 (llava-hf)'s shape: "ROLE: " before every non-system turn, its images first as "<image>\n",
# then each text followed by a space; the generation prompt is "ASSISTANT:".
LLAVA_TEMPLATE = (
    "{%- for message in messages -%}"
    "{%- if message['role'] != 'system' -%}{{- message['role'] | upper + ': ' -}}{%- endif -%}"
    "{%- if message['content'] is string -%}{{- message['content'] + ' ' -}}"
    "{%- else -%}"
    "{%- for part in message['content'] if part['type'] == 'image' -%}{{- '<image>\\n' -}}{%- endfor -%}"
    "{%- for part in message['content'] if part['type'] == 'text' -%}{{- part['text'] + ' ' -}}{%- endfor -%}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- 'ASSISTANT:' -}}{%- endif -%}"
)

# Mistral-Small-3.1 (Mistral3)'s shape: <s>, an optional [SYSTEM_PROMPT] turn, each user turn inside
# [INST] ... [/INST] with one [IMG] per image part in place, each assistant turn followed by </s>; no
# generation prompt (the response follows [/INST]). Pixtral-12B's template writes user turns the same way.
MISTRAL_TEMPLATE = (
    "{{- bos_token -}}"
    "{%- for message in messages -%}"
    "{%- if message['role'] == 'system' -%}"
    "{{- '[SYSTEM_PROMPT]' + message['content'] + '[/SYSTEM_PROMPT]' -}}"
    "{%- elif message['role'] == 'user' -%}"
    "{{- '[INST]' -}}"
    "{%- if message['content'] is string -%}{{- message['content'] -}}"
    "{%- else -%}{%- for part in message['content'] -%}"
    "{%- if part['type'] == 'text' -%}{{- part['text'] -}}"
    "{%- elif part['type'] in ['image', 'image_url'] -%}{{- '[IMG]' -}}"
    "{%- endif -%}"
    "{%- endfor -%}{%- endif -%}"
    "{{- '[/INST]' -}}"
    "{%- elif message['role'] == 'assistant' -%}{{- message['content'] + eos_token -}}"
    "{%- endif -%}"
    "{%- endfor -%}"
)

PATCH, MERGE, CLIP_SIZE = 8, 2, 32
PIXTRAL_LONGEST_EDGE = 64
MIN_PIXELS, MAX_PIXELS = 32 * 32, 64 * 64


# ------------------------------------------------------------------------------------------------
# 1-2. The tokenizer


def make_tokenizer(family: str, vocab_size: int, seed: int) -> PreTrainedTokenizerFast:
    """The family's byte-level BPE with its specials, eos / pad / bos and chat template."""
    if family in PIXTRAL_FAMILIES:
        # Mistral's tekken tokenizer splits text with a cl100k-style regex (Llama-3's), digits in groups.
        core = train_bpe(default_corpus(seed), "llama3", vocab_size, list(MISTRAL_SPECIALS.values()))
        others = [t for k, t in MISTRAL_SPECIALS.items() if k not in ("bos", "eos", "pad")]
        tok = PreTrainedTokenizerFast(tokenizer_object=core, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
                                      add_bos_token=True, extra_special_tokens=others)
        tok.chat_template = MISTRAL_TEMPLATE
    elif family == "llava":
        # Llama-2 (LLaVA-1.5's decoder) splits numbers into single digits, as Qwen2's regex does.
        core = train_bpe(default_corpus(seed), "qwen2", vocab_size, list(LLAVA_SPECIALS.values()))
        tok = PreTrainedTokenizerFast(tokenizer_object=core, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
                                      add_bos_token=True, extra_special_tokens=["<image>"])
        tok.chat_template = LLAVA_TEMPLATE
    else:
        core = train_bpe(default_corpus(seed), "qwen2", vocab_size, list(QWEN_SPECIALS.values()))
        others = [t for k, t in QWEN_SPECIALS.items() if k not in ("end_of_text", "turn_end")]
        tok = PreTrainedTokenizerFast(tokenizer_object=core, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                      extra_special_tokens=others)
        tok.chat_template = QWEN_VL_TEMPLATE
    tok.model_max_length = MAX_POSITIONS
    return tok


# ------------------------------------------------------------------------------------------------
# 3. The image processor's files


def processor_files(family: str) -> dict[str, dict]:
    """File name -> JSON content, with the fields the real downloads carry."""
    if family in PIXTRAL_FAMILIES:
        # the tower's patch size, as Mistral-Small-3.1's preprocessor_config.json writes its 14: PixtralProcessor
        # asks for sides that are multiples of patch x spatial_merge_size when it calls it
        image = {"do_convert_rgb": True, "do_normalize": True, "do_rescale": True, "do_resize": True,
                 "image_mean": CLIP_MEAN, "image_processor_type": "PixtralImageProcessor", "image_std": CLIP_STD,
                 "patch_size": PATCH, "processor_class": "PixtralProcessor", "resample": 3,
                 "rescale_factor": 1 / 255, "size": {"longest_edge": PIXTRAL_LONGEST_EDGE}}
        processor = {"image_break_token": MISTRAL_SPECIALS["image_break"],
                     "image_end_token": MISTRAL_SPECIALS["image_end"], "image_token": MISTRAL_SPECIALS["image"],
                     "patch_size": PATCH, "processor_class": "PixtralProcessor",
                     "spatial_merge_size": MERGE if family == "mistral3" else 1}
        return {"preprocessor_config.json": image, "processor_config.json": processor}
    if family == "llava":
        image = {"crop_size": {"height": CLIP_SIZE, "width": CLIP_SIZE}, "do_center_crop": True,
                 "do_convert_rgb": True, "do_normalize": True, "do_rescale": True, "do_resize": True,
                 "image_mean": CLIP_MEAN, "image_processor_type": "CLIPImageProcessor", "image_std": CLIP_STD,
                 "processor_class": "LlavaProcessor", "resample": 3, "rescale_factor": 1 / 255,
                 "size": {"shortest_edge": CLIP_SIZE}}
        processor = {"num_additional_image_tokens": 1, "patch_size": PATCH, "processor_class": "LlavaProcessor",
                     "vision_feature_select_strategy": "default"}
        return {"preprocessor_config.json": image, "processor_config.json": processor}
    processor_class = "Qwen2_5_VLProcessor" if family == "qwen2_5_vl" else "Qwen2VLProcessor"
    image = {"min_pixels": MIN_PIXELS, "max_pixels": MAX_PIXELS, "patch_size": PATCH, "temporal_patch_size": 2,
             "merge_size": MERGE, "image_mean": CLIP_MEAN, "image_std": CLIP_STD,
             "image_processor_type": "Qwen2VLImageProcessor", "processor_class": processor_class}
    return {"preprocessor_config.json": image}


# ------------------------------------------------------------------------------------------------
# 4. The model

TEXT = dict(hidden_size=64, intermediate_size=176, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
            max_position_embeddings=MAX_POSITIONS, hidden_act="silu", initializer_range=0.02, attention_dropout=0.0,
            use_cache=True)


def qwen_config(family: str, ids: dict[str, int], vocab_size: int):
    """Qwen2-VL / Qwen2.5-VL-Instruct's fields at toy size."""
    text = {**TEXT, "vocab_size": vocab_size, "rms_norm_eps": 1e-6, "tie_word_embeddings": True,
            "rope_parameters": {"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [2, 3, 3]},
            "bos_token_id": ids["end_of_text"], "eos_token_id": ids["turn_end"], "pad_token_id": ids["end_of_text"]}
    vision = dict(depth=2, num_heads=2, patch_size=PATCH, spatial_merge_size=MERGE, temporal_patch_size=2,
                  in_channels=3, initializer_range=0.02)
    if family == "qwen2_5_vl":
        # window_size is in pixels: 32 px = 2x2 merged tokens per window; the last block attends globally
        vision.update(hidden_size=32, intermediate_size=64, out_hidden_size=TEXT["hidden_size"], hidden_act="silu",
                      window_size=32, fullatt_block_indexes=[1], tokens_per_second=2)
        config_class = Qwen2_5_VLConfig
    else:
        vision.update(embed_dim=32, hidden_size=TEXT["hidden_size"], mlp_ratio=2, hidden_act="quick_gelu")
        config_class = Qwen2VLConfig
    return config_class(text_config=text, vision_config=vision, image_token_id=ids["image"],
                        video_token_id=ids["video"], vision_start_token_id=ids["vision_start"],
                        vision_end_token_id=ids["vision_end"], tie_word_embeddings=True, dtype="bfloat16")


def llava_config(ids: dict[str, int], vocab_size: int) -> LlavaConfig:
    """llava-1.5-hf's fields at toy size: a CLIP tower, features of its second-to-last layer without CLS."""
    vision = CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                              image_size=CLIP_SIZE, patch_size=PATCH, projection_dim=TEXT["hidden_size"],
                              hidden_act="quick_gelu")
    text = LlamaConfig(**TEXT, vocab_size=vocab_size, rms_norm_eps=1e-5, tie_word_embeddings=False,
                       rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
                       bos_token_id=ids["bos"], eos_token_id=ids["eos"], pad_token_id=ids["pad"])
    return LlavaConfig(vision_config=vision, text_config=text, image_token_index=ids["image"],
                       vision_feature_layer=-2, vision_feature_select_strategy="default",
                       projector_hidden_act="gelu", image_seq_length=(CLIP_SIZE // PATCH) ** 2,
                       pad_token_id=ids["pad"], tie_word_embeddings=False, dtype="bfloat16")


def pixtral_config(family: str, ids: dict[str, int], vocab_size: int):
    """Mistral-Small-3.1 (Mistral3: 2x2 merge, no projector bias) / Pixtral-12B (LLaVA: no merge, bias)'s
    fields at toy size: a Pixtral tower (SiLU, axial RoPE) and a Mistral text model without sliding window."""
    vision = PixtralVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                                 head_dim=16, image_size=PIXTRAL_LONGEST_EDGE, patch_size=PATCH, hidden_act="silu",
                                 rope_parameters={"rope_type": "axial", "rope_theta": 10000.0})
    text = MistralConfig(**TEXT, vocab_size=vocab_size, head_dim=TEXT["hidden_size"] // TEXT["num_attention_heads"],
                         rms_norm_eps=1e-5, sliding_window=None, tie_word_embeddings=False,
                         rope_parameters={"rope_type": "default", "rope_theta": 1000000000.0},
                         bos_token_id=ids["bos"], eos_token_id=ids["eos"], pad_token_id=ids["pad"])
    common = dict(vision_config=vision, text_config=text, image_token_index=ids["image"], vision_feature_layer=-1,
                  projector_hidden_act="gelu", tie_word_embeddings=False, dtype="bfloat16")
    if family == "mistral3":
        return Mistral3Config(**common, spatial_merge_size=MERGE, multimodal_projector_bias=False)
    return LlavaConfig(**common, vision_feature_select_strategy="full", multimodal_projector_bias=True,
                       pad_token_id=ids["pad"])


def build_model(family: str, tok: PreTrainedTokenizerFast, vocab_size: int, seed: int):
    specials = (LLAVA_SPECIALS if family == "llava" else MISTRAL_SPECIALS if family in PIXTRAL_FAMILIES
                else QWEN_SPECIALS)
    ids = {name: tok.convert_tokens_to_ids(token) for name, token in specials.items()}
    vocab = max(vocab_size, len(tok))
    torch.manual_seed(seed)
    if family in PIXTRAL_FAMILIES:
        config = pixtral_config(family, ids, vocab)
        model_class = Mistral3ForConditionalGeneration if family == "mistral3" else LlavaForConditionalGeneration
        model = model_class(config)
        model.generation_config = GenerationConfig(bos_token_id=ids["bos"], eos_token_id=ids["eos"],
                                                   pad_token_id=ids["pad"])
    elif family == "llava":
        model = LlavaForConditionalGeneration(llava_config(ids, vocab))
        model.generation_config = GenerationConfig(bos_token_id=ids["bos"], eos_token_id=ids["eos"],
                                                   pad_token_id=ids["pad"])
    else:
        model_class = Qwen2_5_VLForConditionalGeneration if family == "qwen2_5_vl" else Qwen2VLForConditionalGeneration
        model = model_class(qwen_config(family, ids, vocab))
        model.generation_config = GenerationConfig(bos_token_id=ids["end_of_text"], pad_token_id=ids["end_of_text"],
                                                   eos_token_id=[ids["turn_end"], ids["end_of_text"]])
    return model.to(torch.bfloat16)


def make_tiny_vlm_checkpoint(out_dir: str | Path, family: str, seed: int = 0, vocab_size: int = 512) -> Path:
    """Write model, tokenizer and image processor files into `out_dir` (created); returns it."""
    if family not in FAMILIES:
        raise ValueError(f"family must be one of {', '.join(FAMILIES)}, not {family!r}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tok = make_tokenizer(family, vocab_size, seed)
    build_model(family, tok, vocab_size, seed).save_pretrained(str(out))
    save_tokenizer(tok, out, "Qwen2Tokenizer" if family in ("qwen2_5_vl", "qwen2_vl") else "PreTrainedTokenizerFast")
    for name, content in processor_files(family).items():
        (out / name).write_text(json.dumps(content, indent=2, sort_keys=True) + "\n")
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--family", choices=FAMILIES, required=True)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    out = make_tiny_vlm_checkpoint(args.out, args.family, args.seed)
    print(f"wrote a tiny {args.family} checkpoint to {out} (load it with k15.models.hf_vlm.load_hf_vlm)")


if __name__ == "__main__":
    main()
