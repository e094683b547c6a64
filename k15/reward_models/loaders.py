"""Training batches for the two reward models, in an order a resumed run continues exactly.

A LightningDataModule over a fixed list of items: each epoch is a seeded shuffle, and a run resumed
mid-epoch skips the batches it already trained on (k15.data.resumable); on N processes each rank
reads its share of every batch. The collate function makes the RM's batch from its items
(padded rows for the Classic RM, packed rows for the CoT RM).
"""

from __future__ import annotations

from collections.abc import Callable

import lightning as L

from k15.data.resumable import resumable_loader


class ItemsDataModule(L.LightningDataModule):
    def __init__(self, items: list, batch_size: int, seed: int, collate: Callable):
        super().__init__()
        if not items:
            raise ValueError("no training items")
        self.items, self.batch_size, self.seed, self.collate = items, min(batch_size, len(items)), seed, collate

    def train_dataloader(self):
        # self.trainer is None outside a fit (a test reading a batch): then nothing is skipped
        return resumable_loader(self.items, self.batch_size, self.seed, self.trainer, collate_fn=self.collate, shard=True)
