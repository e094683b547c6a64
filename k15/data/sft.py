"""SFT data: prompt/response pairs, loss on response tokens only, batches packed without padding.

Vanilla SFT and long-CoT SFT are the same code with different data. Examples come from the
synthetic world or from a file of prompt/response rows (JSONL, Parquet or a `datasets` directory;
fields `data.prompt_field` and `data.response_field`, e.g. MATH's problem and solution). With a chat
template (`data.chat_template`, k15.chat) the prompt is the user turn and the loss is on the
assistant turn only, exactly as RL and evaluation will prompt the model. Each batch is a random
draw of `batch_size` examples packed into rows of the model's context (see k15.data.packing): no
padding, and no sorting by length, which would make whole batches all-short or all-long and swing
the model between the two answer styles from one step to the next.
"""

from __future__ import annotations

import sys
from pathlib import Path

import lightning as L
from torch.utils.data import DataLoader
from transformers import PreTrainedTokenizerBase

from k15.chat import RAW, ChatFormat
from k15.config import DataConfig, SFTConfig, WorldConfig
from k15.data.packing import pack_examples
from k15.data.resumable import resumable_loader
from k15.errors import DataError
from k15.synthetic.corpus import sft_examples
from k15.data.tables import read_rows
from k15.synthetic.traces import Piece


def read_sft_examples(path: str | Path, prompt_field: str = "prompt", response_field: str = "response"
                      ) -> list[tuple[str, list[Piece]]]:
    """(prompt, response) pairs of an SFT file; a row without the mapped fields fails with its file and line."""
    out = []
    for where, row in read_rows(path, "sft.data_path"):
        for name, key in ((prompt_field, "data.prompt_field"), (response_field, "data.response_field")):
            if not isinstance(row, dict) or not isinstance(row.get(name), str):
                raise DataError(f"{where}: field '{name}' ({key}) missing or not text")
        out.append((row[prompt_field], [Piece(row[response_field])]))
    return out


class SFTDataModule(L.LightningDataModule):
    def __init__(self, tok: PreTrainedTokenizerBase, cfg: SFTConfig, world: WorldConfig, seed: int, max_len: int,
                 data: DataConfig | None = None, chat: ChatFormat = RAW):
        super().__init__()
        self.tok, self.cfg, self.world, self.seed, self.max_len = tok, cfg, world, seed, max_len
        self.data, self.chat = data or DataConfig(), chat
        self.examples: list[tuple[list[int], list[int]]] | None = None
        self.dropped = 0

    def setup(self, stage: str | None = None) -> None:
        if self.examples is not None:
            return
        cfg = self.cfg
        if cfg.data_path:
            raw = read_sft_examples(cfg.data_path, self.data.prompt_field, self.data.response_field)
        else:
            raw = sft_examples(self.world, cfg.num_examples, cfg.long_fraction, self.seed)
        examples = [self.chat.example(self.tok, p, r) for p, r in raw]
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
