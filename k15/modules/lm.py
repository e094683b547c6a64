"""What pretraining and SFT share: a causal LM trained on next-token loss, its optimizer and logging."""

from __future__ import annotations

import math

import lightning as L
import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from k15.config import OptimConfig
from k15.data.packing import model_inputs
from k15.distributed import configure_fsdp2, full_weights
from k15.eval.evaluate import sample_responses
from k15.guards import NonFiniteGuard
from k15.callbacks.throughput import ThroughputLogger
from k15.chat import RAW, ChatFormat


def warmup_cosine(optim: OptimConfig, max_steps: int):
    """Linear warm-up, then cosine decay to lr * min_lr_ratio at max_steps."""

    def factor(step: int) -> float:
        if step < optim.warmup_steps:
            return (step + 1) / optim.warmup_steps
        progress = min(1.0, (step - optim.warmup_steps) / max(1, max_steps - optim.warmup_steps))
        return optim.min_lr_ratio + (1 - optim.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return factor


class CausalLMModule(L.LightningModule):
    """Next-token loss on packed batches (k15.data.packing); subclasses differ in name and data only."""

    stage_name = "lm"

    def __init__(
        self,
        model: PreTrainedModel,
        tok: PreTrainedTokenizerBase,
        optim: OptimConfig,
        max_steps: int,
        sample_prompts: list[str] = (),
        sample_every_n_steps: int = 0,
        max_nonfinite_in_a_row: int = 3,
        chat: ChatFormat = RAW,
    ):
        super().__init__()
        self.guard = NonFiniteGuard(max_nonfinite_in_a_row, self.stage_name)
        self.model, self.tok, self.optim, self.max_steps = model, tok, optim, max_steps
        self.sample_prompts = list(sample_prompts)
        self.sample_every_n_steps = sample_every_n_steps
        self.chat = chat  # SFT: the logged generations are prompted as the model is trained
        self.step_tokens = 0

    def training_step(self, batch, batch_idx):
        loss = self.model(**model_inputs(batch)).loss
        self.step_tokens = 0
        if not self.guard.ok(loss, step=self.global_step):
            self.log("train/nonfinite_skipped", float(self.guard.skipped))
            return None  # Lightning skips backward and the optimizer step
        self.log("train/loss", loss, prog_bar=True)
        self.step_tokens = int((batch["doc_ids"] >= 0).sum())  # real (non-padding) tokens, for tokens/s
        return loss

    def configure_callbacks(self):
        return [ThroughputLogger()]

    def configure_model(self) -> None:
        configure_fsdp2(self, self.model)  # FSDP2 under trainer.strategy=fsdp2; nothing otherwise

    def on_train_batch_end(self, outputs, batch, batch_idx):
        step = self.global_step
        if self.sample_every_n_steps and self.sample_prompts and step % self.sample_every_n_steps == 0:
            self.log_samples(step)

    def on_train_end(self):
        self.log_samples(self.global_step)

    @torch.no_grad()
    def log_samples(self, step: int) -> None:
        """A few greedy generations as text in TensorBoard, to read what the model writes."""
        experiment = getattr(self.logger, "experiment", None)
        if experiment is None or not hasattr(experiment, "add_text") or not self.sample_prompts:
            return
        was_training = self.model.training
        self.model.eval()
        prompts = [self.chat.prompt_ids(self.tok, p) for p in self.sample_prompts]
        room = self.model.config.max_position_embeddings - max(len(p) for p in prompts)
        weights = full_weights(self.model)  # FSDP2: gathered on every rank (a collective); generating is local
        responses = sample_responses(weights, self.tok, prompts, 0.0, min(64, room), len(prompts), seed=0,
                                     stop_ids=self.chat.stop_ids(self.tok, self.model))
        lines = [f"    {p}{self.tok.decode(r)}" for p, r in zip(self.sample_prompts, responses)]
        experiment.add_text(f"samples/{self.stage_name}", "\n".join(lines), step)
        self.model.train(was_training)

    def on_before_optimizer_step(self, optimizer) -> None:
        norms = [p.grad.detach().norm() for p in self.model.parameters() if p.grad is not None]
        if norms:  # before clipping: the norm the data produced
            self.log("train/grad_norm", torch.stack(norms).norm())

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["k15_guard"] = self.guard.state_dict()

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        if "k15_guard" in checkpoint:
            self.guard.load_state_dict(checkpoint["k15_guard"])

    def configure_optimizers(self):
        o = self.optim
        decay = [p for p in self.model.parameters() if p.ndim >= 2]
        no_decay = [p for p in self.model.parameters() if p.ndim < 2]
        opt = torch.optim.AdamW(
            [{"params": decay, "weight_decay": o.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
            lr=o.lr,
            betas=(o.beta1, o.beta2),
        )
        sched = torch.optim.lr_scheduler.LambdaLR(opt, warmup_cosine(o, self.max_steps))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
