"""An iteration's rollouts as training data: samples keyed by id, padded tensors, length statistics."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from k15.data.packing import document_mask, pack_examples
from k15.data.prompts import PromptRecord


@dataclass
class Sample:
    id: str  # "<prompt id>#<j>": rewards and stats are looked up by this, never by position
    record: PromptRecord
    prompt: list[int]
    tokens: list[int]
    logprobs: list[float]  # from the rollout engine
    finish_reason: str  # stop | length


@dataclass
class RolloutBatch:
    samples: list[Sample]
    group_ids: torch.Tensor  # [N] long: which prompt each sample answers
    pad_id: int

    @classmethod
    def build(cls, records: list[PromptRecord], prompts: list[list[int]], k: int, out, pad_id: int) -> RolloutBatch:
        samples, groups = [], []
        for i, (record, prompt) in enumerate(zip(records, prompts)):
            for j in range(k):
                n = i * k + j
                samples.append(Sample(f"{record.id}#{j}", record, prompt, out.tokens[n], out.logprobs[n], out.finish_reasons[n]))
                groups.append(i)
        return cls(samples, torch.tensor(groups, dtype=torch.long), pad_id)

    @property
    def num_response_tokens(self) -> int:
        return sum(len(s.tokens) for s in self.samples)

    def tensors(self, device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Right-padded input_ids, attention_mask and loss_mask (1 on response tokens), [N, T]."""
        width = max(len(s.prompt) + len(s.tokens) for s in self.samples)
        n = len(self.samples)
        ids = torch.full((n, width), self.pad_id, dtype=torch.long)
        attention = torch.zeros((n, width), dtype=torch.long)
        loss_mask = torch.zeros((n, width), dtype=torch.float32)
        for row, s in enumerate(self.samples):
            full = s.prompt + s.tokens
            ids[row, : len(full)] = torch.tensor(full)
            attention[row, : len(full)] = 1
            loss_mask[row, len(s.prompt) : len(full)] = 1.0
        return ids.to(device), attention.to(device), loss_mask.to(device)

    def length_stats(self, prefix: str = "") -> dict[str, float]:
        lengths = torch.tensor([len(s.tokens) for s in self.samples], dtype=torch.float32)
        truncated = sum(s.finish_reason == "length" for s in self.samples)
        return {
            f"{prefix}tokens": float(lengths.sum()),
            f"{prefix}len_mean": float(lengths.mean()),
            f"{prefix}len_p50": float(lengths.quantile(0.5)),
            f"{prefix}len_p95": float(lengths.quantile(0.95)),
            f"{prefix}truncated_frac": truncated / len(self.samples),
        }

    def logprob_mismatch(self, train_token_logprobs: torch.Tensor) -> float:
        """Mean |logp_rollout - logp_train| over response tokens (train = the reference pass)."""
        total, count = 0.0, 0
        train = train_token_logprobs.detach().cpu()
        for row, s in enumerate(self.samples):
            if not s.tokens:
                continue
            start = len(s.prompt)
            diff = train[row, start : start + len(s.tokens)] - torch.tensor(s.logprobs)
            total += float(diff.abs().sum())
            count += len(s.tokens)
        return total / max(count, 1)


def token_logprobs(model, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """[N, T]: at position t, log p(input_ids[t] | input_ids[<t]); position 0 (and padding) is 0.

    Padded rows are packed first (several sequences per row, attention kept inside each, see
    k15.data.packing) so no compute goes to padding; the result comes back in the padded layout.
    """
    n, width = input_ids.shape
    lengths = attention_mask.sum(dim=1).tolist()
    row_len = max(width, 1)
    seqs = [input_ids[i, :length].tolist() for i, length in enumerate(lengths)]
    packed = pack_examples([(s, s) for s in seqs], row_len, pad_id=0)
    device = input_ids.device
    logits = model(
        input_ids=packed["input_ids"].to(device),
        position_ids=packed["position_ids"].to(device),
        attention_mask=document_mask(packed["doc_ids"].to(device)),
    ).logits.float()
    ids = packed["input_ids"].to(device)
    lp = torch.gather(F.log_softmax(logits[:, :-1], dim=-1), 2, ids[:, 1:, None]).squeeze(-1)
    lp = F.pad(lp, (1, 0))  # lp[r, t] = log p(token t | tokens before it in its own sequence)
    out = torch.zeros((n, width), dtype=lp.dtype, device=device)
    # Where each sequence landed: the packer fills rows in order, so walk the rows the same way.
    row, col = 0, 0
    for i, length in enumerate(lengths):
        if col + length > row_len:
            row, col = row + 1, 0
        out[i, 1:length] = lp[row, col + 1 : col + length]
        col += length
    return out
