"""The long2short pipeline stages: merge, shortest rejection sampling, DPO, long2short RL (paper §2.4).

Each starts from `long2short.long_model` (a stage of this run, usually `rl`, or a checkpoint
directory) and exports RUN/<stage>/model like every other stage, so evaluation compares them all.
The sampled data each stage trained on is written next to its model, for reading.
"""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L
from torch.utils.data import DataLoader

from k15.config import ExperimentConfig, Long2ShortConfig
from k15.chat import ChatFormat, chat_format_of
from k15.data.prompts import FieldMap, PromptDataModule, PromptRecord
from k15.eval.evaluate import sample_responses
from k15.long2short.merge import merge_checkpoints
from k15.long2short.pairs import Candidate, dpo_pairs, shortest_correct
from k15.errors import ConfigError
from k15.models.policy import export_policy, load_policy
from k15.modules.dpo import DPOModule, PairDataset, collate_pairs, reference_logprobs
from k15.rewards.registry import RewardRegistry
from k15.trainer import make_trainer, stage_logger


def source_dir(name: str, exports: dict[str, Path]) -> Path:
    return exports[name] if name in exports else Path(name)


def sample_candidates(cfg: ExperimentConfig, model_dir: Path
                      ) -> tuple[list[PromptRecord], list[list[int]], list[list[Candidate]], object, ChatFormat]:
    """n responses per prompt from the long model, each marked correct or not by the prompt's verifier."""
    l2s: Long2ShortConfig = cfg.long2short
    model, tok = load_policy(cfg.model, model_dir)
    chat = chat_format_of(cfg.data, tok, model)
    data = PromptDataModule(cfg.world, cfg.rl.prompt_path, l2s.num_prompts, 1, cfg.run.seed + 17, FieldMap.from_config(cfg.data))
    data.setup()
    records = data.records[: l2s.num_prompts]
    check_text_prompts(records, cfg.rl.prompt_path)
    prompts = [chat.prompt_ids(tok, r.prompt) for r in records]
    n = l2s.samples_per_prompt
    flat = [p for p in prompts for _ in range(n)]
    responses = sample_responses(model, tok, flat, l2s.temperature, l2s.max_new_tokens, 256, cfg.run.seed, chat.stop_ids(tok, model))
    items = [(f"{i}#{j}", chat.response_text(tok, responses[i * n + j]), r) for i, r in enumerate(records) for j in range(n)]
    with RewardRegistry.from_config(cfg.rewards) as registry:
        verdicts = registry.score(items)
    candidates = [[Candidate(tuple(responses[i * n + j]), verdicts[f"{i}#{j}"].reward == 1.0) for j in range(n)]
                  for i in range(len(records))]
    return records, prompts, candidates, tok, chat


def check_text_prompts(records: list[PromptRecord], source) -> None:
    """shortest_rs and dpo: their SFT examples and preference pairs are text, so image prompts are refused."""
    if any(r.images for r in records):
        raise ConfigError(f"shortest_rs and dpo train on text prompts only, and {source} has image prompts; "
                          "for a vision-language model use merge or l2s_rl")


def run_merge(cfg: ExperimentConfig, run_dir: Path, exports: dict[str, Path]) -> Path:
    l2s = cfg.long2short
    return merge_checkpoints(
        source_dir(l2s.long_model, exports), source_dir(l2s.short_model, exports), run_dir / "merge" / "model", l2s.merge_weight
    )


def run_shortest_rs(cfg: ExperimentConfig, run_dir: Path, exports: dict[str, Path]) -> Path:
    """SFT of the long model on the shortest correct of n samples per prompt."""
    from k15.pipeline import console, train_sft  # the pipeline imports this module

    l2s = cfg.long2short
    long_dir = source_dir(l2s.long_model, exports)
    records, prompts, candidates, tok, chat = sample_candidates(cfg, long_dir)
    stage_dir = run_dir / "shortest_rs"
    stage_dir.mkdir(parents=True, exist_ok=True)
    data_path = stage_dir / "shortest_correct.jsonl"
    kept = 0
    with data_path.open("w") as f:
        for record, cands in zip(records, candidates):
            best = shortest_correct(cands)
            if best is not None:  # SFT prompts it again in the run's chat format and adds the end of turn
                response = chat.response_text(tok, list(best.tokens))
                f.write(json.dumps({"prompt": record.prompt, "response": response}) + "\n")
                kept += 1
    console.print(f"shortest_rs: {kept} of {len(prompts)} prompts have a correct sample; SFT on the shortest")
    if kept == 0:
        console.print("[bold red]WARNING[/]: shortest_rs: no correct sample at all; exporting the long model unchanged")
        model, tok = load_policy(cfg.model, long_dir)
        return export_policy(model, tok, stage_dir / "model")
    sft_cfg = _with_sft(cfg, data_path, l2s)
    return train_sft(sft_cfg, run_dir, long_dir, stage="shortest_rs")


def _with_sft(cfg: ExperimentConfig, data_path: Path, l2s: Long2ShortConfig) -> ExperimentConfig:
    import copy

    out = copy.deepcopy(cfg)
    out.sft.data_path = str(data_path)
    out.data.prompt_field, out.data.response_field = "prompt", "response"  # the file shortest_rs wrote
    out.sft.max_steps = l2s.rs_steps
    out.sft.batch_size = l2s.rs_batch_size
    out.sft.optim = l2s.rs_optim
    return out


def run_dpo(cfg: ExperimentConfig, run_dir: Path, exports: dict[str, Path]) -> Path:
    from k15.pipeline import console

    l2s = cfg.long2short
    long_dir = source_dir(l2s.long_model, exports)
    _, prompts, candidates, tok, _ = sample_candidates(cfg, long_dir)
    pairs = [p for prompt, cands in zip(prompts, candidates) for p in dpo_pairs(prompt, cands, l2s.long_ratio, l2s.max_pairs_per_prompt)]
    stage_dir = run_dir / "dpo"
    stage_dir.mkdir(parents=True, exist_ok=True)
    kinds = {k: sum(p.kind == k for p in pairs) for k in ("wrong", "long")}
    console.print(f"dpo: {len(pairs)} pairs from {len(prompts)} prompts ({kinds['wrong']} wrong, {kinds['long']} too long)")
    with (stage_dir / "pairs.jsonl").open("w") as f:
        for p in pairs:
            f.write(json.dumps({"prompt": tok.decode(list(p.prompt)), "chosen": tok.decode(list(p.chosen)),
                                "rejected": tok.decode(list(p.rejected)), "kind": p.kind}) + "\n")
    L.seed_everything(cfg.run.seed, verbose=False)
    model, tok = load_policy(cfg.model, long_dir)
    if not pairs:
        console.print("[bold red]WARNING[/]: dpo: no preference pairs (no prompt had a correct and a rejected sample); exporting the long model unchanged")
        return export_policy(model, tok, stage_dir / "model")
    ref = reference_logprobs(model, pairs, tok.pad_token_id)
    model.train()
    module = DPOModule(model, tok.pad_token_id, l2s.dpo_beta, l2s.dpo_optim, l2s.dpo_steps, l2s.dpo_nll_weight)
    loader = DataLoader(PairDataset(pairs, ref), batch_size=l2s.dpo_batch_size, shuffle=True, collate_fn=collate_pairs,
                        drop_last=len(pairs) >= l2s.dpo_batch_size)
    trainer = make_trainer(cfg, stage_dir, stage_logger(run_dir, "dpo"), l2s.dpo_steps, l2s.dpo_optim.grad_clip)
    trainer.fit(module, train_dataloaders=loader)
    return export_policy(model, tok, stage_dir / "model")


def run_l2s_rl(cfg: ExperimentConfig, run_dir: Path, exports: dict[str, Path]) -> Path:
    """RL from the long model with the length penalty on from the first iteration and a much
    shorter maximum response length: over-long answers are penalised even when correct."""
    import copy

    from k15.pipeline import train_rl

    l2s = cfg.long2short
    out = copy.deepcopy(cfg)
    out.rl.iterations = l2s.rl_iterations
    out.rl.max_new_tokens = l2s.rl_max_new_tokens
    out.rl.length_penalty.weight = l2s.rl_length_weight
    out.rl.length_penalty.warmup_iterations = 0
    return train_rl(out, run_dir, source_dir(l2s.long_model, exports), stage="l2s_rl")
