"""DPO as a LightningModule: the long2short preference stage (paper §2.4).

Batches hold (prompt, chosen, rejected) token ids with the reference model's sequence log-probs,
computed once before training (`reference_logprobs`); the policy's log-probs come from one packed
forward pass over chosen and rejected together.
"""

from __future__ import annotations

import lightning as L
import torch
from transformers import PreTrainedModel

from k15.long2short.dpo import dpo_loss
from k15.long2short.pairs import Pair
from k15.modules.lm import warmup_cosine
from k15.rl.batch import token_logprobs
from k15.config import OptimConfig
from k15.distributed import configure_fsdp2


def pair_tensors(pairs: list[Pair], pad_id: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Right-padded [2P, T] ids, attention and response mask: chosen sequences first, then rejected."""
    seqs = [(p.prompt, p.chosen) for p in pairs] + [(p.prompt, p.rejected) for p in pairs]
    width = max(len(a) + len(b) for a, b in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    attention = torch.zeros_like(ids)
    mask = torch.zeros(ids.shape, dtype=torch.float32)
    for row, (prompt, response) in enumerate(seqs):
        full = list(prompt) + list(response)
        ids[row, : len(full)] = torch.tensor(full)
        attention[row, : len(full)] = 1
        mask[row, len(prompt) : len(full)] = 1.0
    return ids, attention, mask


def sequence_logprobs(model: PreTrainedModel, pairs: list[Pair], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Sum of response-token log-probs for chosen [P] and rejected [P]."""
    device = next(model.parameters()).device
    ids, attention, mask = (t.to(device) for t in pair_tensors(pairs, pad_id))
    seq = (token_logprobs(model, ids, attention) * mask).sum(dim=1)
    return seq[: len(pairs)], seq[len(pairs) :]


@torch.no_grad()
def reference_logprobs(model: PreTrainedModel, pairs: list[Pair], pad_id: int, batch_size: int = 64) -> torch.Tensor:
    """[P, 2] reference log-probs (chosen, rejected), computed once with the starting model."""
    was_training = model.training
    model.eval()
    out = []
    for start in range(0, len(pairs), batch_size):
        c, r = sequence_logprobs(model, pairs[start : start + batch_size], pad_id)
        out.append(torch.stack([c, r], dim=1).cpu())
    model.train(was_training)
    return torch.cat(out)


class DPOModule(L.LightningModule):
    def __init__(self, model: PreTrainedModel, pad_id: int, beta: float, optim: OptimConfig, max_steps: int,
                 nll_weight: float = 0.0):
        super().__init__()
        self.model, self.pad_id, self.beta, self.optim, self.max_steps = model, pad_id, beta, optim, max_steps
        self.nll_weight = nll_weight

    def training_step(self, batch, batch_idx):
        pairs, ref = batch
        logp_c, logp_r = sequence_logprobs(self.model, pairs, self.pad_id)
        ref = ref.to(logp_c.device)
        chosen_tokens = torch.tensor([len(p.chosen) for p in pairs], dtype=logp_c.dtype, device=logp_c.device)
        loss, stats = dpo_loss(logp_c, logp_r, ref[:, 0], ref[:, 1], self.beta, self.nll_weight, chosen_tokens)
        self.log("train/loss", loss, prog_bar=True)
        self.log_dict({f"dpo/{k}": v for k, v in stats.items() if k != "loss"})
        self.log("dpo/chosen_len", float(sum(len(p.chosen) for p in pairs)) / len(pairs))
        return loss

    def configure_model(self) -> None:
        configure_fsdp2(self, self.model)  # FSDP2 under trainer.strategy=fsdp2; nothing otherwise

    def configure_optimizers(self):
        opt = torch.optim.AdamW(self.model.parameters(), lr=self.optim.lr, betas=(self.optim.beta1, self.optim.beta2),
                                weight_decay=self.optim.weight_decay)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, warmup_cosine(self.optim, self.max_steps))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


class PairDataset(torch.utils.data.Dataset):
    def __init__(self, pairs: list[Pair], ref: torch.Tensor):
        self.pairs, self.ref = pairs, ref

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, i: int):
        return self.pairs[i], self.ref[i]


def collate_pairs(batch):
    pairs = [p for p, _ in batch]
    return pairs, torch.stack([r for _, r in batch])
