"""The Classic reward model: one scalar from a head on the decoder, trained as a binary classifier.

The paper's Classic RM is an InstructGPT-style value head that reads (question, reference, response)
and outputs one scalar: correct or not. Here it is transformers' sequence-classification twin of
the policy's decoder (LlamaForSequenceClassification / Qwen2ForSequenceClassification, num_labels=1).

Steps:
    1. `classic_from_decoder`: build the twin from the causal LM's config, copy the decoder's weights
       in, and zero the head so every score starts at p = 0.5. transformers reads the hidden state at
       the rightmost token that is not the pad id, so the config must name the tokenizer's pad id;
    2. inputs: <bos> + `judge_prompt(example)`, right-padded, with an attention mask; targets: the labels;
    3. `ClassicRMModule`: binary cross-entropy on the logit, AdamW with warm-up and cosine decay;
    4. `export_classic_rm` / `load_classic_rm`: a Hugging Face directory plus the RM marker;
       `ClassicRM.score(texts)` gives probabilities, `judge(examples)` the verdicts at a threshold.
"""

from __future__ import annotations

import copy
from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F
from transformers import AutoModelForSequenceClassification, PreTrainedModel, PreTrainedTokenizerBase

from k15.config import OptimConfig
from k15.errors import CheckpointError, DataError
from k15.guards import NonFiniteGuard
from k15.modules.lm import warmup_cosine
from k15.reward_models.checkpoints import export_reward_model, read_marker
from k15.reward_models.data import JudgeExample, judge_prompt
from k15.reward_models.loaders import ItemsDataModule
from k15.tokenizer import load_tokenizer, prompt_ids


def classic_from_decoder(causal_lm: PreTrainedModel, tok: PreTrainedTokenizerBase, max_len: int | None = None
                         ) -> PreTrainedModel:
    """The sequence-classification twin of `causal_lm` (one output), its decoder weights copied, its head zero.
    `max_len` raises the context when the RM reads more than the policy was trained on."""
    config = copy.deepcopy(causal_lm.config)
    config.num_labels = 1
    config.architectures = None  # save_pretrained writes the twin's own class
    config.pad_token_id = tok.pad_token_id  # where each row ends (see the module docstring)
    if max_len:
        config.max_position_embeddings = max(config.max_position_embeddings, max_len)
    model = AutoModelForSequenceClassification.from_config(config, attn_implementation=config._attn_implementation)
    missing, unexpected = model.model.load_state_dict(causal_lm.model.state_dict(), strict=False)
    if missing or unexpected:
        raise CheckpointError(f"the decoder's weights do not fit {type(model).__name__}: missing {missing[:3]}, "
                              f"unexpected {unexpected[:3]}")
    torch.nn.init.zeros_(model.score.weight)
    return model


def classic_inputs(tok: PreTrainedTokenizerBase, texts: list[str]) -> dict[str, torch.Tensor]:
    """Right-padded input_ids and attention_mask of <bos> + text, one row per text."""
    rows = [prompt_ids(tok, t) for t in texts]
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), tok.pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(r)
        mask[i, : len(r)] = 1
    return {"input_ids": ids, "attention_mask": mask}


def classic_data(tok: PreTrainedTokenizerBase, examples: list[JudgeExample], batch_size: int, seed: int,
                 max_len: int) -> tuple[ItemsDataModule, int]:
    """Shuffled batches of (inputs, labels), and how many examples were dropped as longer than `max_len`."""
    kept = [ex for ex in examples if len(prompt_ids(tok, judge_prompt(ex))) <= max_len]
    if not kept:
        raise DataError(f"every Classic RM example is longer than the context ({max_len} tokens)")

    def collate(batch: list[JudgeExample]) -> dict[str, torch.Tensor]:
        inputs = classic_inputs(tok, [judge_prompt(ex) for ex in batch])
        return {**inputs, "labels": torch.tensor([float(ex.label) for ex in batch])}

    return ItemsDataModule(kept, batch_size, seed, collate), len(examples) - len(kept)


class ClassicRMModule(L.LightningModule):
    """Binary cross-entropy on the scalar head's logit (label 1: the response matches the reference)."""

    stage_name = "classic_rm"

    def __init__(self, model: PreTrainedModel, optim: OptimConfig, max_steps: int, max_nonfinite_in_a_row: int = 3):
        super().__init__()
        self.model, self.optim, self.max_steps = model, optim, max_steps
        self.guard = NonFiniteGuard(max_nonfinite_in_a_row, self.stage_name)

    def training_step(self, batch, batch_idx):
        logits = self.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.squeeze(-1)
        loss = F.binary_cross_entropy_with_logits(logits, batch["labels"])
        if not self.guard.ok(loss, step=self.global_step):
            self.log("train/nonfinite_skipped", float(self.guard.skipped))
            return None
        self.log("train/loss", loss, prog_bar=True)
        self.log("train/accuracy", ((logits > 0) == (batch["labels"] > 0.5)).float().mean())
        return loss

    def configure_optimizers(self):
        return adamw_warmup_cosine(self.model, self.optim, self.max_steps)


def adamw_warmup_cosine(model: torch.nn.Module, o: OptimConfig, max_steps: int) -> dict:
    """AdamW (no decay on norms and biases) with the warm-up + cosine schedule the LM stages use."""
    decay = [p for p in model.parameters() if p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.ndim < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": o.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=o.lr, betas=(o.beta1, o.beta2))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, warmup_cosine(o, max_steps))
    return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


class ClassicRM:
    """A trained Classic RM for inference: probabilities that responses match their references."""

    def __init__(self, model: PreTrainedModel, tok: PreTrainedTokenizerBase, batch_size: int = 64):
        self.model, self.tok, self.batch_size = model.eval(), tok, batch_size

    @torch.no_grad()
    def logits(self, texts: list[str]) -> torch.Tensor:
        device = next(self.model.parameters()).device
        out = []
        for start in range(0, len(texts), self.batch_size):
            inputs = classic_inputs(self.tok, texts[start : start + self.batch_size])
            out.append(self.model(**{k: v.to(device) for k, v in inputs.items()}).logits.squeeze(-1).float().cpu())
        return torch.cat(out) if out else torch.zeros(0)

    def score(self, texts: list[str]) -> list[float]:
        """P(correct) for each judge prompt (`judge_prompt(example)`)."""
        return torch.sigmoid(self.logits(texts)).tolist()

    def judge(self, examples: list[JudgeExample], threshold: float = 0.5) -> list[bool]:
        return [p >= threshold for p in self.score([judge_prompt(ex) for ex in examples])]


def export_classic_rm(model: PreTrainedModel, tok: PreTrainedTokenizerBase, path: str | Path) -> Path:
    return export_reward_model(model, tok, path, "classic", max_len=model.config.max_position_embeddings)


def load_classic_rm(path: str | Path, key: str = "classic_rm", attn_implementation: str = "sdpa",
                    batch_size: int = 64, foreign_ok: bool = False) -> ClassicRM:
    read_marker(path, "classic", key, foreign_ok)
    try:
        model = AutoModelForSequenceClassification.from_pretrained(
            str(path), local_files_only=True, dtype=torch.float32, attn_implementation=attn_implementation)
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{key}={path}: cannot load the Classic RM: {str(exc).splitlines()[0]}") from None
    return ClassicRM(model, load_tokenizer(path, key), batch_size)
