"""Packing variable-length examples into fixed-width rows, with attention kept inside each example.

Several examples share one row; `position_ids` restart at 0 for each, and a block-diagonal causal
mask stops one example from attending to another. The model therefore computes exactly what it
would on each example alone, without padding it to the longest one (a test checks packed loss ==
padded loss). On CPU the mask is a boolean [B, 1, T, T] tensor that SDPA takes as it is; on GPU
with flash-attn, restarting `position_ids` is what selects its variable-length kernels.
"""

from __future__ import annotations

import torch

IGNORE = -100


def pack_examples(
    examples: list[tuple[list[int], list[int]]], row_len: int, pad_id: int
) -> dict[str, torch.Tensor]:
    """Greedy packing in the given order: an example goes into the current row if it fits, else opens a new one.

    `examples` are (input_ids, labels) pairs, labels IGNORE where no loss is taken. Examples longer than
    `row_len` are refused (cut them or raise the row length first). Returns input_ids, labels,
    position_ids and doc_ids ([rows, row_len]; doc_ids is -1 on padding).
    """
    rows: list[list[tuple[list[int], list[int]]]] = [[]]
    used = 0
    for ids, labels in examples:
        if len(ids) > row_len:
            raise ValueError(f"an example of {len(ids)} tokens does not fit a row of {row_len}")
        if used + len(ids) > row_len:
            rows.append([])
            used = 0
        rows[-1].append((ids, labels))
        used += len(ids)
    n = len(rows)
    input_ids = torch.full((n, row_len), pad_id, dtype=torch.long)
    labels = torch.full((n, row_len), IGNORE, dtype=torch.long)
    position_ids = torch.zeros((n, row_len), dtype=torch.long)
    doc_ids = torch.full((n, row_len), -1, dtype=torch.long)
    for r, row in enumerate(rows):
        start = 0
        for d, (ids, lab) in enumerate(row):
            end = start + len(ids)
            input_ids[r, start:end] = torch.tensor(ids)
            example_labels = torch.tensor(lab)
            example_labels[0] = IGNORE  # the first token is never predicted from the previous example
            labels[r, start:end] = example_labels
            position_ids[r, start:end] = torch.arange(len(ids))
            doc_ids[r, start:end] = d
            start = end
    return {"input_ids": input_ids, "labels": labels, "position_ids": position_ids, "doc_ids": doc_ids}


def document_mask(doc_ids: torch.Tensor) -> torch.Tensor:
    """[B, 1, T, T] bool: query t may attend key s iff s <= t and both belong to the same example.

    Padding (doc id -1) attends to itself only, so no row of the mask is empty (SDPA would give NaN).
    """
    t = doc_ids.shape[1]
    causal = torch.ones(t, t, dtype=torch.bool, device=doc_ids.device).tril()
    same = doc_ids[:, :, None] == doc_ids[:, None, :]
    return (same & causal)[:, None]


def model_inputs(packed: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Keyword arguments for a HF causal LM forward on a packed batch."""
    return {
        "input_ids": packed["input_ids"],
        "labels": packed["labels"],
        "position_ids": packed["position_ids"],
        "attention_mask": document_mask(packed["doc_ids"]),
    }
