"""SFT data: prompt/response pairs, loss on response tokens only, batches packed without padding.

Vanilla SFT and long-CoT SFT are the same code with different data. Examples come from the
synthetic world or from a JSONL file of {"prompt": ..., "response": ...} rows. Each batch is a random
draw of `batch_size` examples packed into rows of the model's context (see k15.data.packing): no
padding, and no sorting by length, which would make whole batches all-short or all-long and swing
the model between the two answer styles from one step to the next.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import lightning as L
from torch.utils.data import DataLoader
from transformers import PreTrainedTokenizerBase

from k15.config import SFTConfig, WorldConfig
from k15.data.packing import IGNORE, pack_examples
from k15.data.resumable import resumable_loader
from k15.errors import DataError
from k15.synthetic.corpus import sft_examples
from k15.synthetic.traces import Piece
from k15.tokenizer import encode, prompt_ids


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


class SFTDataModule(L.LightningDataModule):
    def __init__(self, tok: PreTrainedTokenizerBase, cfg: SFTConfig, world: WorldConfig, seed: int, max_len: int):
        super().__init__()
        self.tok, self.cfg, self.world, self.seed, self.max_len = tok, cfg, world, seed, max_len
        self.examples: list[tuple[list[int], list[int]]] | None = None
        self.dropped = 0

    def setup(self, stage: str | None = None) -> None:
        if self.examples is not None:
            return
        cfg = self.cfg
        if cfg.data_path:
            raw = read_sft_jsonl(cfg.data_path)
        else:
            raw = sft_examples(self.world, cfg.num_examples, cfg.long_fraction, self.seed)
        examples = [tokenize_example(self.tok, p, r) for p, r in raw]
        # Over-long examples would be cut mid-answer and teach truncated answers: drop them, count them.
        self.examples = [ex for ex in examples if len(ex[0]) <= self.max_len]
        self.dropped = len(examples) - len(self.examples)
        if not self.examples:
            raise DataError(f"every SFT example is longer than the model context ({self.max_len} tokens)")
        if self.dropped:  # said out loud: a silently shrunken data set is a known trap
            print(f"sft: dropped {self.dropped} of {len(examples)} examples longer than the model context "
                  f"({self.max_len} tokens)", file=sys.stderr)

    def train_dataloader(self) -> DataLoader:
        pad_id, row_len = self.tok.pad_token_id, self.max_len
        collate = lambda batch: pack_examples(batch, row_len, pad_id)  # noqa: E731
        return resumable_loader(self.examples, self.cfg.batch_size, self.seed, self.trainer, collate_fn=collate, shard=True)
