"""Packing documents into fixed-length rows for next-token pretraining."""

from __future__ import annotations

import torch


def pack_documents(docs: list[list[int]], seq_len: int) -> torch.Tensor:
    """Concatenate token lists into one stream and cut it into rows of `seq_len` tokens.

    Documents carry their own `<bos>` / `<eos>` so the model sees where one ends; the tail that does
    not fill a whole row is dropped.
    """
    stream = torch.tensor([t for doc in docs for t in doc], dtype=torch.long)
    rows = stream.numel() // seq_len
    if rows == 0:
        raise ValueError(f"{stream.numel()} tokens cannot fill one row of {seq_len}")
    return stream[: rows * seq_len].view(rows, seq_len)
