"""Everything a run needs from the machine, checked before any stage trains (and before its run directory exists).

    0. the machine: CUDA for trainer.accelerator=gpu, flash-attn for model.attn_implementation=flash_attention_2
    1. the starting checkpoint (`model.init_from`) and tokenizer (`model.tokenizer`): config.json,
       weights and tokenizer files present, the context k15 will use within the model's own
    2. the chat format (`data.chat_template`, `data.system_prompt`): it renders with that tokenizer
    3. every data file a stage will read: `sft.data_path`, `rl.prompt_path`, `eval.prompt_path`,
       `pretrain.data_path`, through the `data.*` field mapping (a bad row names its file and line,
       rows without a gold answer are counted), with a verifier for every prompt and text the
       tokenizer can represent
    4. a reward model directory (`rewards.rm.path`): present, and a reward model of `rewards.rm.kind`

A problem is one K15Error line; nothing has been written yet. The stages read the files again when
they run (cheap next to training), so a preflight never changes what a stage does.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

from k15.chat import RAW, ChatFormat, image_text
from k15.config import RM_STAGES, ExperimentConfig
from k15.errors import CheckpointError, ConfigError, DataError
from k15.models.attention import check_attn_implementation
from k15.models.policy import is_vlm
from k15.models.vlm import IMAGE_TOKEN

PROMPT_STAGES = ("rl", "l2s_rl", "shortest_rs", "dpo")  # stages that read rl.prompt_path


def preflight(cfg: ExperimentConfig) -> None:
    from k15.chat import chat_format_of
    from k15.data.prompts import FieldMap, read_prompt_set
    from k15.data.sft import read_sft_examples
    from k15.models.checkpoint_dir import check_model_dir, check_tokenizer_dir
    from k15.models.policy import model_kind
    from k15.rewards.registry import RewardRegistry
    from k15.rl.sampler import make_sampler
    from k15.tokenizer import load_tokenizer, unencodable_characters

    m = cfg.model
    if cfg.trainer.accelerator in ("gpu", "cuda") and not torch.cuda.is_available():
        raise ConfigError(f"trainer.accelerator={cfg.trainer.accelerator} but no CUDA device is visible; "
                          "on a CPU machine add trainer=cpu")
    attn_problem = check_attn_implementation(m.attn_implementation, cfg.trainer.accelerator)
    if attn_problem:
        raise ConfigError(f"model.attn_implementation: {attn_problem}")
    kind = None  # of the starting checkpoint: k15_vlm, hf_vlm or text
    if m.init_from:
        check_model_dir(m.init_from, "model.init_from", tokenizer=not m.tokenizer)
        kind = model_kind(m.init_from)  # a vision-language family k15 does not run: one line, now
        if kind == "hf_vlm" and cfg.trainer.strategy in ("fsdp", "fsdp2"):
            raise ConfigError(f"trainer.strategy={cfg.trainer.strategy} does not shard transformers vision-language models "
                              "yet (their decoder and vision blocks are not wrapped); use trainer.strategy=auto or ddp")
        if kind == "hf_vlm" and any(getattr(getattr(cfg, s, None), "rope_theta", 0) > 0 for s in cfg.stages):
            raise ConfigError("a vision stage's rope_theta (the long-context stage) changes k15's own decoder only; "
                              "for a transformers vision-language model set its rope_theta to 0")
        context = _model_context(Path(m.init_from))
        uses_max_seq_len = {"sft", "rl", "shortest_rs", "l2s_rl"} & set(cfg.stages)  # row length, rollout context
        if uses_max_seq_len and context is not None and m.max_seq_len > context:
            raise CheckpointError(f"model.max_seq_len={m.max_seq_len} exceeds the context of the model in {m.init_from} "
                                  f"({context} positions); lower model.max_seq_len")
    if m.tokenizer:
        check_tokenizer_dir(m.tokenizer, "model.tokenizer")
    rm = cfg.rewards.rm
    if rm.kind != "none" and "rl" in cfg.stages and rm.path not in RM_STAGES:  # a directory: the right kind of RM?
        from k15.reward_models.checkpoints import read_marker

        read_marker(rm.path, rm.kind.removesuffix("_rm"), "rewards.rm.path", foreign_ok=True)
    if kind == "k15_vlm":
        return  # the synthetic image tasks and k15's VLM checkpoints are checked by their stages
    tok = load_tokenizer(m.tokenizer or m.init_from)
    facts = None  # a transformers VLM without its weights: images count as the tokens its processor makes
    if kind == "hf_vlm":
        from k15.models.hf_vlm import hf_vlm_facts

        facts = hf_vlm_facts(m.init_from, tok=tok)  # the run's tokenizer: its ids of Pixtral's row markers
    chat = chat_format_of(cfg.data, tok, facts)
    context = (_model_context(Path(m.init_from)) if m.init_from else None) or m.max_seq_len
    fields = FieldMap.from_config(cfg.data)

    def representable(texts, source: str) -> None:
        for where, text in texts:
            bad = unencodable_characters(tok, text)
            if bad:
                shown = "".join(sorted(bad))[:20]
                raise DataError(f"{source}: {where}: the tokenizer cannot represent {shown!r} (the synthetic world's "
                                "tokenizer knows lowercase, digits and +-*/=,;:.()?!); set model.tokenizer or model.init_from")

    stages = set(cfg.stages)
    if "sft" in stages and cfg.sft.data_path:
        examples = read_sft_examples(cfg.sft.data_path, cfg.data.prompt_field, cfg.data.response_field)
        representable(((f"example {i + 1}", p + "".join(x.text for x in r)) for i, (p, r) in enumerate(examples)),
                      cfg.sft.data_path)
    sets = []
    if stages & set(PROMPT_STAGES) and cfg.rl.prompt_path:
        sets.append(("rl.prompt_path", cfg.rl.prompt_path))
    if "eval" in stages and cfg.eval.prompt_path:
        sets.append(("eval.prompt_path", cfg.eval.prompt_path))
    prompts_of: dict[str, set[str]] = {}
    for key, path in sets:
        records = read_prompt_set(path, fields, key)
        prompts_of[key] = {(r.prompt, r.images) for r in records}  # an image set may ask one question of many images
        RewardRegistry.from_config(cfg.rewards).check(records)  # a verifier for every prompt, usable tests for code
        representable(((f"prompt {r.id}", r.prompt) for r in records if not r.images), path)
        if key == "rl.prompt_path" and {"shortest_rs", "dpo"} & stages:
            from k15.long2short.stages import check_text_prompts

            check_text_prompts(records, path)
        if key == "rl.prompt_path":  # room for a response; the sampler's needs (difficulty labels for a curriculum)
            check_prompt_lengths(records, tok, cfg.rl.max_new_tokens, m.max_seq_len, path, facts, chat)
            make_sampler(records, cfg.rl.sampling, cfg.rl.prompts_per_iteration, cfg.run.seed)
        else:
            n = cfg.eval.num_prompts or len(records)
            check_prompt_lengths(records[:n], tok, cfg.eval.max_new_tokens, context, path, facts, chat,
                                 what="eval.max_new_tokens", context_key="the model's context")
    if "pretrain" in stages and cfg.pretrain.data_path and not Path(cfg.pretrain.data_path).is_file():
        raise DataError(f"pretrain.data_path: not found: {cfg.pretrain.data_path}")
    if len(prompts_of) == 2:  # held-out numbers from prompts RL trained on are not held out
        shared = prompts_of["rl.prompt_path"] & prompts_of["eval.prompt_path"]
        if shared:
            print(f"WARNING: {len(shared)} of {len(prompts_of['eval.prompt_path'])} prompts of eval.prompt_path are also in "
                  "rl.prompt_path: the evaluation is not held out", file=sys.stderr)


def check_prompt_lengths(records, tok, max_new_tokens: int, max_seq_len: int, source, model=None, chat: ChatFormat = RAW,
                         what: str = "rl.max_new_tokens", context_key: str = "model.max_seq_len") -> None:
    """Every prompt must leave room for a full response in the model's context (images count as their tokens)."""
    marker = image_text(tok, model) if is_vlm(model) else IMAGE_TOKEN
    for record in records:
        ids = chat.prompt_ids(tok, record.prompt, marker if record.images else None)
        n = len(ids)
        if is_vlm(model):  # (without the model, as in the preflight, images are counted by the stage)
            placeholders = ids.count(model.image_token_id)
            if placeholders != len(record.images):
                raise DataError(f"{source}: prompt '{record.id}' has {placeholders} <image> placeholders but "
                                f"{len(record.images)} images")
            if record.images:
                from k15.data.vision_prompts import image_tokens

                n += image_tokens(record, model) - len(record.images)
        if n + max_new_tokens > max_seq_len:
            raise DataError(
                f"{source}: prompt '{record.id}' has {n} tokens; with {what}={max_new_tokens} it exceeds "
                f"{context_key}={max_seq_len}"
            )


def _model_context(path: Path) -> int | None:
    try:
        config = json.loads((path / "config.json").read_text())
    except (OSError, ValueError):
        return None
    config = config.get("text_config", config)  # a VLM's decoder
    return config.get("max_position_embeddings")
