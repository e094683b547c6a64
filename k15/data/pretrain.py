"""Text pretraining data: packed rows from the synthetic corpus or from a text file."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset
from transformers import PreTrainedTokenizerBase

from k15.config import PretrainConfig, WorldConfig
from k15.data.packing import pack_examples
from k15.data.resumable import resumable_loader
from k15.errors import DataError
from k15.synthetic.corpus import pretrain_documents


def read_text_documents(path: str | Path) -> list[str]:
    path = Path(path)
    if not path.is_file():
        raise DataError(f"pretraining text file not found: {path}")
    docs = [line.rstrip("\n") for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not docs:
        raise DataError(f"{path}: no documents (expected one per line)")
    return docs


class PackedRows(Dataset):
    """Rows of a packed corpus, as dicts of tensors (input_ids, labels, position_ids, doc_ids)."""

    def __init__(self, packed: dict[str, torch.Tensor]):
        self.packed = packed

    def __len__(self) -> int:
        return self.packed["input_ids"].shape[0]

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {k: v[i] for k, v in self.packed.items()}


class TextPretrainDataModule(L.LightningDataModule):
    def __init__(self, tok: PreTrainedTokenizerBase, cfg: PretrainConfig, world: WorldConfig, seed: int):
        super().__init__()
        self.tok, self.cfg, self.world, self.seed = tok, cfg, world, seed
        self.rows: PackedRows | None = None

    def setup(self, stage: str | None = None) -> None:
        if self.rows is not None:
            return
        cfg = self.cfg
        if cfg.data_path:
            texts = read_text_documents(cfg.data_path)
        else:
            mix = {"raw": cfg.mix_raw, "short": cfg.mix_short, "long": cfg.mix_long}
            texts = pretrain_documents(self.world, cfg.num_documents, mix, self.seed)
        ids = self.tok(texts, add_special_tokens=False)["input_ids"]
        bos = [self.tok.bos_token_id] if self.tok.bos_token_id is not None else []
        eos = [self.tok.eos_token_id] if self.tok.eos_token_id is not None else []
        docs = [(bos + d + eos)[: cfg.seq_len] for d in ids]  # a longer document is cut to one row
        self.rows = PackedRows(pack_examples([(d, d) for d in docs], cfg.seq_len, self.tok.pad_token_id))

    def train_dataloader(self) -> DataLoader:
        return resumable_loader(self.rows, self.cfg.batch_size, self.seed, self.trainer, shard=True)
