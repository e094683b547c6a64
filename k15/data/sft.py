"""SFT data: prompt/response pairs, loss on response tokens only, batches bucketed by length.

Vanilla SFT and long-CoT SFT are the same code with different data. Examples come from the
synthetic world or from a JSONL file of {"prompt": ..., "response": ...} rows.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import lightning as L
import torch
from torch.utils.data import DataLoader, Sampler
from transformers import PreTrainedTokenizerBase

from k15.config import SFTConfig, WorldConfig
from k15.errors import DataError
from k15.synthetic.corpus import sft_examples
from k15.synthetic.traces import Piece
from k15.tokenizer import encode, prompt_ids

IGNORE = -100


def read_sft_jsonl(path: str | Path) -> list[tuple[str, list[Piece]]]:
    path = Path(path)
    if not path.is_file():
        raise DataError(f"SFT data file not found: {path}")
    out = []
    with path.open(encoding="utf-8") as f:
        for line_no, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{path}:{line_no}: not valid JSON ({exc.msg})") from None
            for key in ("prompt", "response"):
                if not isinstance(row, dict) or not isinstance(row.get(key), str):
                    raise DataError(f"{path}:{line_no}: field '{key}' missing or not a string")
            out.append((row["prompt"], [Piece(row["response"])]))
    if not out:
        raise DataError(f"{path}: no examples")
    return out


def tokenize_example(tok: PreTrainedTokenizerBase, prompt: str, response: list[Piece]) -> tuple[list[int], list[int]]:
    """input_ids and labels; labels are IGNORE on the prompt and on pieces not trained on."""
    ids = prompt_ids(tok, prompt)
    labels = [IGNORE] * len(ids)
    for piece in response:
        piece_ids = encode(tok, piece.text)
        ids += piece_ids
        labels += piece_ids if piece.trained else [IGNORE] * len(piece_ids)
    return ids, labels


class LengthBucketSampler(Sampler[list[int]]):
    """Shuffled batches of similar lengths: little padding, still random order.

    Indices are shuffled, cut into pools of `pool` batches, sorted by length inside each pool,
    split into batches, and the batches shuffled again. The order is a function of (seed, epoch).
    """

    def __init__(self, lengths: list[int], batch_size: int, seed: int, pool: int = 50):
        self.lengths, self.batch_size, self.seed, self.pool = lengths, batch_size, seed, pool
        self.epoch = 0

    def __iter__(self):
        rng = random.Random(f"{self.seed}/{self.epoch}")
        self.epoch += 1
        order = list(range(len(self.lengths)))
        rng.shuffle(order)
        size = self.batch_size * self.pool
        batches = []
        for start in range(0, len(order), size):
            chunk = sorted(order[start : start + size], key=self.lengths.__getitem__)
            batches += [chunk[i : i + self.batch_size] for i in range(0, len(chunk), self.batch_size)]
        batches = [b for b in batches if len(b) == self.batch_size] or batches
        rng.shuffle(batches)
        return iter(batches)

    def __len__(self) -> int:
        return max(1, len(self.lengths) // self.batch_size)


def pad_collate(pad_id: int):
    def collate(batch: list[tuple[list[int], list[int]]]) -> dict[str, torch.Tensor]:
        width = max(len(ids) for ids, _ in batch)
        input_ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
        labels = torch.full((len(batch), width), IGNORE, dtype=torch.long)
        attention = torch.zeros((len(batch), width), dtype=torch.long)
        for row, (ids, lab) in enumerate(batch):
            input_ids[row, : len(ids)] = torch.tensor(ids)
            labels[row, : len(lab)] = torch.tensor(lab)
            attention[row, : len(ids)] = 1
        return {"input_ids": input_ids, "labels": labels, "attention_mask": attention}

    return collate


class SFTDataModule(L.LightningDataModule):
    def __init__(self, tok: PreTrainedTokenizerBase, cfg: SFTConfig, world: WorldConfig, seed: int, max_len: int):
        super().__init__()
        self.tok, self.cfg, self.world, self.seed, self.max_len = tok, cfg, world, seed, max_len
        self.examples: list[tuple[list[int], list[int]]] | None = None

    def setup(self, stage: str | None = None) -> None:
        if self.examples is not None:
            return
        cfg = self.cfg
        if cfg.data_path:
            raw = read_sft_jsonl(cfg.data_path)
        else:
            raw = sft_examples(self.world, cfg.num_examples, cfg.long_fraction, self.seed)
        examples = [tokenize_example(self.tok, p, r) for p, r in raw]
        too_long = sum(len(ids) > self.max_len for ids, _ in examples)
        if too_long == len(examples):
            raise DataError(f"every SFT example is longer than the model context ({self.max_len} tokens)")
        # Over-long examples would be cut mid-answer and teach truncated answers: drop them, say so.
        self.dropped = too_long
        self.examples = [ex for ex in examples if len(ex[0]) <= self.max_len]

    def train_dataloader(self) -> DataLoader:
        lengths = [len(ids) for ids, _ in self.examples]
        return DataLoader(
            self.examples,
            batch_sampler=LengthBucketSampler(lengths, self.cfg.batch_size, self.seed),
            collate_fn=pad_collate(self.tok.pad_token_id),
        )
