"""An iteration's rollouts as training data: samples keyed by id, padded tensors, length statistics.

With partial rollouts a sample's response may have been generated over several iterations; then
`fresh_start` marks where this iteration's tokens begin (older ones were sampled by older policies)
and `loss_start` where the loss begins (0, or `fresh_start` with `rl.partial.loss_on=current`).
Reference log-probs are always recomputed over the whole response.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from k15.data.packing import model_inputs, pack_examples
from k15.data.prompts import PromptRecord
from k15.rollout.buffer import Group


@dataclass
class Sample:
    id: str  # "<prompt id>@<group id>#<j>": rewards and stats are looked up by this, never by position
    record: PromptRecord
    prompt: list[int]
    tokens: list[int]
    logprobs: list[float]  # from the rollout engine
    finish_reason: str  # stop | length | repeat
    fresh_start: int = 0  # response tokens before this came from an earlier iteration's policy
    loss_start: int = 0  # response tokens before this are context only, not in the loss
    segments: int = 1  # iterations the response was generated in
    images: list = field(default_factory=list)  # the prompt's pixels [C, H, W], in placeholder order


@dataclass
class RolloutBatch:
    samples: list[Sample]
    group_ids: torch.Tensor  # [N] long: which prompt each sample answers
    pad_id: int

    @classmethod
    def from_groups(
        cls, groups: list[Group], records: list[PromptRecord], prompts: list[list[int]], iteration: int,
        loss_on_current_only: bool, pad_id: int, images: list[list] | None = None,
    ) -> RolloutBatch:
        """Finished groups (k15.rollout.partial) as a batch; `prompts[i]` are the ids of one group's prompt
        (placeholders expanded) and `images[i]` its pixels, for image prompts."""
        samples, group_ids = [], []
        images = images or [[] for _ in groups]
        for gi, (group, prompt, pixels) in enumerate(zip(groups, prompts, images, strict=True)):
            record = records[group.prompt_index]
            for j, m in enumerate(group.members):
                fresh = m.tokens_before(iteration)
                samples.append(Sample(
                    f"{record.id}@{group.id}#{j}", record, prompt, m.tokens, m.logprobs, m.finish_reason,
                    fresh_start=fresh, loss_start=fresh if loss_on_current_only else 0, segments=len(m.segments),
                    images=pixels,
                ))
                group_ids.append(gi)
        return cls(samples, torch.tensor(group_ids, dtype=torch.long), pad_id)

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
            loss_mask[row, len(s.prompt) + s.loss_start : len(full)] = 1.0
        return ids.to(device), attention.to(device), loss_mask.to(device)

    def images_of(self, rows: torch.Tensor | list[int]) -> list[torch.Tensor]:
        """The pixels of `rows`' prompts, flat in row order: the order their placeholders take in a packed forward."""
        return [img for r in (rows.tolist() if isinstance(rows, torch.Tensor) else rows) for img in self.samples[r].images]

    def length_stats(self, prefix: str = "") -> dict[str, float]:
        lengths = torch.tensor([len(s.tokens) for s in self.samples], dtype=torch.float32)
        truncated = sum(s.finish_reason == "length" for s in self.samples)
        repeated = sum(s.finish_reason == "repeat" for s in self.samples)
        return {
            f"{prefix}tokens": float(lengths.sum()),
            f"{prefix}len_mean": float(lengths.mean()),
            f"{prefix}len_p50": float(lengths.quantile(0.5)),
            f"{prefix}len_p95": float(lengths.quantile(0.95)),
            f"{prefix}truncated_frac": truncated / len(self.samples),
            f"{prefix}repeat_frac": repeated / len(self.samples),
        }

    def logprob_mismatch(self, train_token_logprobs: torch.Tensor, rows: list[int] | None = None) -> float:
        """Mean |logp_rollout - logp_train| over this iteration's response tokens (train = the reference pass),
        over `rows` only when given (on N processes, the rows this rank computed)."""
        total, count = 0.0, 0
        train = train_token_logprobs.detach().cpu()
        for row in range(len(self.samples)) if rows is None else rows:
            s = self.samples[row]
            fresh = s.logprobs[s.fresh_start :]
            if not fresh:
                continue
            start = len(s.prompt) + s.fresh_start
            diff = train[row, start : start + len(fresh)] - torch.tensor(fresh)
            total += float(diff.abs().sum())
            count += len(fresh)
        return total / max(count, 1)


def token_logprobs(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, images: list | None = None
                   ) -> torch.Tensor:
    """[N, T]: at position t, log p(input_ids[t] | input_ids[<t]); position 0 (and padding) is 0.

    Padded rows are packed first (several sequences per row, attention kept inside each, see
    k15.data.packing) so no compute goes to padding; the result comes back in the padded layout.
    A VLM (k15.models.vlm) takes `images`, the rows' pixels in row order (packing keeps the order,
    so they meet their placeholders), and its `<image>` logit is masked as the rollout engine masks
    it (k15.rollout.vision), so both compute log-probs under the same distribution.
    """
    n, width = input_ids.shape
    lengths = attention_mask.sum(dim=1).tolist()
    row_len = max(width, 1)
    seqs = [input_ids[i, :length].tolist() for i, length in enumerate(lengths)]
    packed = pack_examples([(s, s) for s in seqs], row_len, pad_id=0)
    device = input_ids.device
    image_token_id = getattr(model, "image_token_id", None)
    extra = {"images": [img.to(device) for img in images or []]} if image_token_id is not None else {}
    inputs = model_inputs({k: packed[k].to(device) for k in ("input_ids", "labels", "position_ids")})
    del inputs["labels"]  # only the logits are wanted
    logits = model(**inputs, **extra).logits.float()
    if image_token_id is not None:
        never = torch.zeros(logits.shape[-1], dtype=torch.bool, device=device)
        never[image_token_id] = True
        logits = logits.masked_fill(never, -torch.inf)
    ids = packed["input_ids"].to(device)
    lp = torch.gather(F.log_softmax(logits[:, :-1], dim=-1), 2, ids[:, 1:, None]).squeeze(-1)
    if image_token_id is not None:  # placeholders are prompt, never predicted: 0, not -inf (0 * -inf is NaN)
        lp = lp.masked_fill(ids[:, 1:] == image_token_id, 0.0)
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
