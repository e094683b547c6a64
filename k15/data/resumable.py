"""Batch order that a resumed run continues exactly: no batch replayed, none skipped.

The order of epoch e is a pure function of (seed, e). When Lightning resumes mid-epoch it restores
how many batches of the epoch were trained on; the loader built after the restore skips exactly
those. (Counting batches the loader has *yielded* would be off by one: Lightning fetches a batch
ahead of the one it trains on.)

With trainer.record_data_order the batches also carry `example_ids`, the dataset indices they hold
(a list, left alone by device transfers and by the forward pass), which
k15.callbacks.data_order.ExampleOrder writes down after each step.
"""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader, Dataset, Sampler, default_collate

from k15.callbacks.data_order import records_examples
from k15.errors import ConfigError


class EpochBatchSampler(Sampler[list[int]]):
    """Shuffled batches of indices, reshuffled per epoch (`set_epoch`, which Lightning calls).

    On N processes (`world` > 1) a batch is the global batch: rank r gets its every N-th index from
    position r, so the ranks together read exactly the batches of a 1-process run.
    """

    def __init__(self, size: int, batch_size: int, seed: int, shuffle: bool = True, drop_last: bool = True,
                 rank: int = 0, world: int = 1):
        self.size, self.batch_size, self.seed, self.shuffle = size, batch_size, seed, shuffle
        self.rank, self.world = rank, world
        self.drop_last = drop_last and size >= batch_size
        self.epoch = 0
        self.skip = 0  # batches of the current epoch already trained on before a resume

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        if self.shuffle:
            order = torch.randperm(self.size, generator=torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)).tolist()
        else:
            order = list(range(self.size))
        batches = [order[i : i + self.batch_size] for i in range(0, self.size, self.batch_size)]
        if self.drop_last and len(batches[-1]) < self.batch_size:
            batches.pop()
        skip, self.skip = self.skip, 0  # only the epoch that was interrupted is cut short
        return iter(b[self.rank :: self.world] for b in batches[skip:])

    def __len__(self) -> int:
        return self.size // self.batch_size if self.drop_last else -(-self.size // self.batch_size)


def batches_done_in_epoch(trainer) -> int:
    """Batches of the interrupted epoch already trained on, when resuming mid-epoch; else 0.

    Called while Lightning builds the train loader, after it restored the loop counters and before
    it classifies the restart, so the mid-epoch test is made here from the epoch counters: the epoch
    had started and was not processed. `processed` (not `completed`) counts a batch whose training
    step ran, also when the checkpoint was written in that batch's on_train_batch_end.
    """
    if trainer is None or not trainer.fit_loop.restarting:
        return 0
    epochs = trainer.fit_loop.epoch_progress.total
    if not (epochs.started == epochs.ready and epochs.processed == epochs.started - 1):
        return 0
    return int(trainer.fit_loop.epoch_loop.batch_progress.current.processed)


class ResumableLoader(DataLoader):
    """A DataLoader that tells Lightning it can resume mid-epoch (so it does not warn that it can't).

    Its position needs no state of its own: the batch sampler is built after the restore and skips
    the batches the trainer's restored counters say were trained on (`batches_done_in_epoch`). Its
    length stays the whole epoch, as Lightning counts the restored batches towards it.
    """

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


class Indexed(Dataset):
    """A dataset whose items come with their index, (i, item), for the batch to say what it holds."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int):
        return i, self.dataset[i]


def with_example_ids(collate):
    """`collate` over the items of (i, item) pairs, the indices added to the batch as `example_ids`."""

    def collate_indexed(pairs):
        batch = collate([item for _, item in pairs])
        if isinstance(batch, dict):
            batch["example_ids"] = [i for i, _ in pairs]
        return batch

    return collate_indexed


def resumable_loader(dataset, batch_size: int, seed: int, trainer, shuffle: bool = True, drop_last: bool = True,
                     collate_fn=None, shard: bool = False) -> ResumableLoader:
    """`shard`: on N processes each rank reads its share of every batch (pretraining, SFT); without it
    every rank reads every batch (RL's loader of iteration numbers)."""
    rank, world = (trainer.global_rank, trainer.world_size) if shard and trainer is not None else (0, 1)
    if batch_size < world:
        raise ConfigError(f"a batch of {batch_size} cannot be split across {world} processes; raise the stage's batch_size")
    sampler = EpochBatchSampler(len(dataset), batch_size, seed, shuffle=shuffle, drop_last=drop_last, rank=rank, world=world)
    sampler.skip = batches_done_in_epoch(trainer)
    if records_examples(trainer):  # only then: the usual batches stay as they were
        dataset, collate_fn = Indexed(dataset), with_example_ids(collate_fn or default_collate)
    return ResumableLoader(dataset, batch_sampler=sampler, collate_fn=collate_fn)
