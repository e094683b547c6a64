"""Packing variable-length examples into fixed-width rows, with attention kept inside each example.

Several examples share one row and `position_ids` restart at 0 for each. The model therefore
computes exactly what it would on each example alone, without padding it to the longest one (a test
checks packed loss == padded loss, on llama and qwen2, under sdpa and eager).

`model_inputs` hands a transformers decoder the packed rows in its "varlen" (padding-free) form:
no attention mask at all, the documents are told apart by their restarting positions. On
sdpa/eager transformers builds the block-diagonal causal mask itself from `position_ids`
(masking_utils.find_packed_sequence_indices); flash_attention_2 runs its variable-length kernel on
the `cu_seq_lens_*` boundaries we pass alongside. `document_mask` (an explicit [B, 1, T, T] mask
from doc ids) stays for callers that pass `doc_ids` to a VLM wrapper (k15.models.vlm, hf_vlm).
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

    A row's padding (at its end) counts 0, 1, 2, ... like one more document: position-based packing
    detection then sees it as a segment of its own, which no real token sees, and which sees what
    document_mask lets padding see (the padding before it), so both forms give the same logits.
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
        position_ids[r, start:] = torch.arange(row_len - start)
    return {"input_ids": input_ids, "labels": labels, "position_ids": position_ids, "doc_ids": doc_ids}


def document_mask(doc_ids: torch.Tensor) -> torch.Tensor:
    """[B, 1, T, T] bool: query t may attend key s iff s <= t and both belong to the same example.

    Padding (doc id -1) attends to itself and the padding before it, so no row of the mask is empty
    (SDPA would give NaN).
    """
    t = doc_ids.shape[1]
    causal = torch.ones(t, t, dtype=torch.bool, device=doc_ids.device).tril()
    same = doc_ids[:, :, None] == doc_ids[:, None, :]
    return (same & causal)[:, None]


def document_starts(position_ids: torch.Tensor) -> torch.Tensor:
    """[S + 1] int32 offsets into the flattened [B * T] batch where each segment starts, then B * T.

    A segment starts wherever the position is 0: at every document and at a row's padding (which
    pack_examples numbers like a document of its own). This is the cut transformers makes itself
    from `position_ids` (diff != 1 there, == min for flash-attention), so every backend separates
    the same segments. A row's first token always starts one: no segment may run into the next row.
    """
    is_start = position_ids == 0
    is_start[:, 0] = True
    starts = torch.nonzero(is_start.reshape(-1)).flatten()
    end = torch.tensor([position_ids.numel()], device=position_ids.device)
    return torch.cat([starts, end]).to(torch.int32)


def model_inputs(packed: dict[str, torch.Tensor]) -> dict:
    """Keyword arguments for a transformers causal LM forward on a packed batch, in the varlen form.

    input_ids, labels, position_ids [B, T] as packed; no attention_mask; cu_seq_lens_q/_k (int32
    segment offsets over the flattened batch) and max_length_q/_k (int) for flash-attention; and
    use_cache=False. The last matters: transformers looks for packed documents in `position_ids` only
    when there is neither a mask nor a cache, and a model whose config says use_cache would create
    one and then attend causally across the whole row. flash_attention_2 would find the documents
    from `position_ids` alone only for a single row (batch size 1), hence the explicit boundaries.
    """
    position_ids = packed["position_ids"]
    cu = document_starts(position_ids)
    longest = int((cu[1:] - cu[:-1]).max())  # one host sync per step; flash-attn wants a Python int
    return {
        "input_ids": packed["input_ids"],
        "labels": packed["labels"],
        "position_ids": position_ids,
        "cu_seq_lens_q": cu,
        "cu_seq_lens_k": cu,
        "max_length_q": longest,
        "max_length_k": longest,
        "use_cache": False,
    }
