"""Vision-language pretraining data: a weighted mixture of webdataset shard sources, packed into rows.

    cfg = MixtureConfig(shards={"text": "shards/text", "ocr": "shards/ocr", "synthetic": "shards/synthetic"},
                        weights={"text": 0.7, "ocr": 0.1, "synthetic": 0.2})
    dm = PretrainDataModule.for_model(vlm, tok, cfg)        # our VLM or a k15.models.hf_vlm wrapper
    for batch in dm.train_dataloader(): loss = vlm(**vlm_inputs(batch)).loss

A source is a named set of shards (k15.data.shards: a directory, glob, brace pattern or list) of any
kind -- text-only, caption, interleaved, OCR, synthetic -- the kind is in each sample, not in the
config. Its weight is its share of training *tokens* (image placeholders included): each next
document comes from the source furthest below its share so far, so the realised shares follow the
weights exactly, step by step. A source without a weight (or weight 0) is off, so the stages of
the paper are changes of `weights` over one `shards` table (language-only, then vision, then the
vision share raised to 30%). Every source repeats forever.

A document becomes `<bos> segment ... response <eos>`: text segments are tokenized, every image
becomes `tokens_per_image(h, w)` placeholders (labels IGNORE) and its pixels (the model's
ImageProcessor). A document longer than `seq_len` is cut, never through an image (the images past
the cut are dropped; a document whose first image does not fit is dropped and counted). Documents
pass a shuffle buffer, then are packed greedily into rows of `seq_len` (k15.data.packing: positions
restart per document, attention stays inside it), and `batch_size` rows make a batch:

    input_ids, labels, position_ids, doc_ids   [batch_size, seq_len]   (as k15.data.packing.pack_examples)
    images          list of [C, H, W] tensors, in reading order (row 0 left to right, then row 1, ...)
    source_tokens   [num_sources] real tokens per source in this batch (to log the realised mixture)
    keys            "source/sample key" of every document in the batch, in packing order
    skipped_fraction  this reader's skipped share so far (0-dim), to log as data/skipped_fraction

Splitting. Each reader -- a (rank, loader worker) slot -- reads a disjoint part of every source, the
same part in every pass: its shards when the source has at least as many shards as there are slots
(shard i goes to slot i mod slots, after a seeded shuffle that all slots agree on; each slot
reshuffles the order of its own shards every pass), else every slot reads all shards and decodes
only the samples whose running index is its own mod slots. Rank and world size come from the
constructor when given (tests), else from the Lightning trainer, else from torch.distributed when it
is initialised, else 0 and 1; the worker from torch's get_worker_info.

Bad data (k15.data.shards): skipped and counted per reader and source; past `max_skip_fraction` the
run stops with a one-line DataError naming the shard -- raised in the main process even when the
reader is a loader worker (the worker hands the message over instead of a traceback).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Callable, Iterator

import lightning as L
import torch
import torch.distributed as dist
from PIL import Image
from torch.utils.data import DataLoader, IterableDataset, get_worker_info
from transformers import PreTrainedTokenizerBase

from k15.data.packing import IGNORE, model_inputs, pack_examples
from k15.data.shards import Document, SkipCounter, SkipPolicy, expand_shards, read_shard
from k15.errors import ConfigError, DataError


@dataclass
class MixtureConfig:
    # source name -> its shards: a directory of .tar files, a glob, a brace pattern or a comma-separated list
    shards: dict[str, str] = field(default_factory=dict)
    # source name -> share of training tokens (normalised over the sources); a source left out is off
    weights: dict[str, float] = field(default_factory=dict)
    seq_len: int = 128
    batch_size: int = 16  # packed rows per batch
    shuffle_buffer: int = 256  # documents
    num_workers: int = 0  # loader worker processes
    max_skip_fraction: float = 0.05  # per source and reader; past it the run fails
    min_samples_before_failing: int = 100  # evidence needed before the threshold applies mid-pass

    @property
    def names(self) -> list[str]:
        """The sources, in the order of `shards` (the order of a batch's `source_tokens`)."""
        return list(self.shards)

    def weight(self, name: str) -> float:
        return float(self.weights.get(name, 0.0))

    def validate(self) -> None:
        if not self.shards:
            raise ConfigError("the pretraining mixture has no sources (mixture.shards is empty)")
        unknown = sorted(set(self.weights) - set(self.shards))
        if unknown:
            raise ConfigError(f"mixture weights name unknown sources {unknown}; sources: {', '.join(self.shards)}")
        if any(w < 0 for w in self.weights.values()) or not any(w > 0 for w in self.weights.values()):
            raise ConfigError("mixture weights must be >= 0 and at least one > 0")
        if self.seq_len < 4 or self.batch_size < 1:
            raise ConfigError("mixture seq_len must be >= 4 and batch_size >= 1")


@dataclass
class Example:
    ids: list[int]
    labels: list[int]
    images: list[torch.Tensor]
    source: int
    key: str = ""


def vlm_inputs(batch: dict) -> dict:
    """Keyword arguments for a VLM forward (ours or an hf_vlm wrapper) on a mixture batch."""
    return {**model_inputs(batch), "images": batch["images"]}


# ------------------------------------------------------------------------------------------------
# Documents -> token ids


def tokenize_document(
    doc: Document,
    tok: PreTrainedTokenizerBase,
    image_processor: Callable[[Image.Image], torch.Tensor],
    tokens_per_image: Callable[[int, int], int],
    image_token_id: int,
    max_len: int | None = None,
    train_on_prompt: bool = True,
) -> tuple[list[int], list[int], list[torch.Tensor]] | None:
    """(ids, labels, pixels) of `<bos> segments response <eos>`, cut to `max_len` (never through an image).

    Returns None when not even the first image fits. `train_on_prompt=False` takes no loss on the
    prompt segments (SFT); pretraining trains on every text token.
    """
    ids = [tok.bos_token_id] if tok.bos_token_id is not None else []
    labels = list(ids)
    images: list[torch.Tensor] = []
    runs: list[tuple[int, int]] = []  # each image's placeholder run [start, end)
    parts = [(seg, train_on_prompt) for seg in doc.segments] + ([(doc.response, True)] if doc.response else [])
    for seg, trained in parts:
        if isinstance(seg, str):
            piece = tok.encode(seg, add_special_tokens=False)
            ids += piece
            labels += piece if trained else [IGNORE] * len(piece)
        else:
            pixels = image_processor(seg)
            n = tokens_per_image(pixels.shape[-2], pixels.shape[-1])
            runs.append((len(ids), len(ids) + n))
            ids += [image_token_id] * n
            labels += [IGNORE] * n
            images.append(pixels)
    if tok.eos_token_id is not None:
        ids.append(tok.eos_token_id)
        labels.append(tok.eos_token_id)
    if max_len is not None and len(ids) > max_len:
        cut = max_len
        for i, (start, end) in enumerate(runs):
            if end > max_len:  # this image does not fit: cut before it, drop it and the ones after
                cut, images = min(start, max_len), images[:i]
                break
        ids, labels = ids[:cut], labels[:cut]
    if len(ids) < 2:
        return None
    return ids, labels, images


def pack_rows(examples: list[Example], row_len: int, pad_id: int, num_sources: int) -> dict:
    """pack_examples on the examples, plus their images in reading order and tokens per source."""
    packed = pack_examples([(e.ids, e.labels) for e in examples], row_len, pad_id)
    packed["images"] = [img for e in examples for img in e.images]  # greedy packing keeps the order
    counts = torch.zeros(num_sources, dtype=torch.long)
    for e in examples:
        counts[e.source] += len(e.ids)
    packed["source_tokens"] = counts
    packed["keys"] = [e.key for e in examples]
    return packed


# ------------------------------------------------------------------------------------------------
# The stream


def reader_slot(rank: int, world_size: int) -> tuple[int, int]:
    """(this reader's slot, number of slots) over ranks x loader workers."""
    info = get_worker_info()
    worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
    return rank * workers + worker, world_size * workers


@dataclass
class _Failure:
    message: str


class MixtureStream(IterableDataset):
    """An endless stream of packed batches from the weighted sources (one reader slot's share)."""

    def __init__(self, tok, cfg: MixtureConfig, image_processor, tokens_per_image, image_token_id: int,
                 seed: int = 0, rank: int = 0, world_size: int = 1, skip_batches: int = 0):
        cfg.validate()
        if tok.pad_token_id is None:
            raise ConfigError("the tokenizer has no pad token (packing pads rows with it)")
        self.tok, self.cfg = tok, cfg
        self.image_processor, self.tokens_per_image = image_processor, tokens_per_image
        self.image_token_id, self.seed = image_token_id, seed
        self.rank, self.world_size, self.skip_batches = rank, world_size, skip_batches
        # only sources that are on are looked up, so a stage can leave out shards it does not have yet
        self.shards = [expand_shards(cfg.shards[n]) if cfg.weight(n) > 0 else [] for n in cfg.names]
        self.counters: list[SkipCounter] = []
        self.dropped_long = 0

    def _documents(self, source: int, slot: int, slots: int) -> Iterator[Document]:
        """Source `source`'s documents for this slot, pass after pass.

        The split is fixed for the whole run (a slot never reads another slot's samples, in any
        pass); only the order of a slot's own shards is reshuffled every pass.
        """
        name = self.cfg.names[source]
        counter = self.counters[source]
        urls = list(self.shards[source])
        random.Random(f"{self.seed}/{name}").shuffle(urls)  # identical on every slot
        epoch = 0
        while True:
            if len(urls) >= slots:
                mine = urls[slot::slots]
                random.Random(f"{self.seed}/{name}/{slot}/{epoch}").shuffle(mine)
                for url in mine:
                    yield from read_shard(url, counter)
            else:
                offset = 0  # the running sample index over all shards decides the reader
                for url in urls:
                    def keep(i: int, start: int = offset) -> bool:
                        return (start + i) % slots == slot

                    offset += yield from read_shard(url, counter, keep)
            counter.end_of_pass()
            epoch += 1

    def _examples(self, slot: int, slots: int) -> Iterator[Example]:
        cfg = self.cfg
        weights = torch.tensor([cfg.weight(n) for n in cfg.names], dtype=torch.float64)
        weights = weights / weights.sum()
        streams = [self._documents(i, slot, slots) if w > 0 else None for i, w in enumerate(weights.tolist())]
        tokens = torch.zeros(len(streams), dtype=torch.float64)
        dropped_in_a_row = 0
        while True:
            deficit = weights * tokens.sum() - tokens
            deficit[weights == 0] = -float("inf")
            source = int(torch.argmax(deficit))  # ties: the first source
            doc = next(streams[source])
            encoded = tokenize_document(doc, self.tok, self.image_processor, self.tokens_per_image,
                                        self.image_token_id, cfg.seq_len)
            if encoded is None:
                self.dropped_long += 1
                dropped_in_a_row += 1
                if dropped_in_a_row >= 1000:
                    raise DataError(f"source '{cfg.names[source]}': 1000 documents in a row have an image that "
                                    f"does not fit seq_len {cfg.seq_len} (last: {doc.url}: '{doc.key}')")
                continue
            dropped_in_a_row = 0
            ids, labels, images = encoded
            tokens[source] += len(ids)
            yield Example(ids, labels, images, source, f"{cfg.names[source]}/{doc.key}")

    def _batches(self, slot: int, slots: int) -> Iterator[dict]:
        cfg = self.cfg
        rng = random.Random(f"{self.seed}/shuffle/{slot}")
        buffer: list[Example] = []
        rows: list[list[Example]] = [[]]
        used = 0
        for example in self._examples(slot, slots):
            buffer.append(example)
            if len(buffer) < cfg.shuffle_buffer:
                continue
            example = buffer.pop(rng.randrange(len(buffer)))
            if used + len(example.ids) > cfg.seq_len:
                rows.append([])
                used = 0
                if len(rows) > cfg.batch_size:  # batch_size complete rows and one open row
                    done = [e for row in rows[: cfg.batch_size] for e in row]
                    rows = rows[cfg.batch_size:]
                    batch = pack_rows(done, cfg.seq_len, self.tok.pad_token_id, len(cfg.names))
                    batch["skipped_fraction"] = torch.tensor(max((c.fraction for c in self.counters), default=0.0))
                    yield batch
            rows[-1].append(example)
            used += len(example.ids)

    def __iter__(self) -> Iterator[dict]:
        slot, slots = reader_slot(self.rank, self.world_size)
        policy = SkipPolicy(self.cfg.max_skip_fraction, self.cfg.min_samples_before_failing)
        self.counters = [SkipCounter(name, policy) for name in self.cfg.names]
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        skip = len(range(worker, self.skip_batches, workers))  # this worker's share of the batches already served
        try:
            for i, batch in enumerate(self._batches(slot, slots)):
                if i >= skip:
                    yield batch
        except DataError as exc:
            if info is None:
                raise
            yield _Failure(str(exc))  # re-raised by _Loader in the main process, as one line


class _Loader(DataLoader):
    """A DataLoader that turns a worker's _Failure into a DataError in the main process."""

    def __iter__(self):
        iterator = super().__iter__()
        for item in iterator:
            if isinstance(item, _Failure):
                # Stop the workers now, not whenever the garbage collector finds the iterator
                # (a shutdown run from a GC pass can wait seconds on workers that never hear it).
                shutdown = getattr(iterator, "_shutdown_workers", None)
                if shutdown is not None:
                    shutdown()
                raise DataError(item.message)
            yield item


# ------------------------------------------------------------------------------------------------
# The DataModule


def _resolve_rank(trainer, rank: int | None, world_size: int | None) -> tuple[int, int]:
    if rank is not None and world_size is not None:
        return rank, world_size
    if trainer is not None:
        return trainer.global_rank, trainer.world_size
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class PretrainDataModule(L.LightningDataModule):
    """Packed batches from a weighted mixture of shard sources, split across ranks and loader workers."""

    def __init__(
        self,
        tok: PreTrainedTokenizerBase,
        cfg: MixtureConfig,
        image_processor: Callable[[Image.Image], torch.Tensor],
        tokens_per_image: Callable[[int, int], int],
        image_token_id: int,
        seed: int = 0,
        rank: int | None = None,
        world_size: int | None = None,
    ):
        super().__init__()
        cfg.validate()
        self.tok, self.cfg, self.seed = tok, cfg, seed
        self.image_processor, self.tokens_per_image = image_processor, tokens_per_image
        self.image_token_id = image_token_id
        self.rank, self.world_size = rank, world_size
        self.skip_batches = 0

    @classmethod
    def for_model(cls, model, tok: PreTrainedTokenizerBase, cfg: MixtureConfig, seed: int = 0,
                  rank: int | None = None, world_size: int | None = None) -> PretrainDataModule:
        """Image processing and placeholder counts from the model (k15 VLM or hf_vlm wrapper)."""
        return cls(tok, cfg, model.image_processor(), model.tokens_per_image, model.image_token_id, seed, rank,
                   world_size)

    def resume_from(self, batches: int) -> None:
        """Skip the first `batches` batches of the stream (deterministic fast-forward on resume)."""
        self.skip_batches = batches

    def dataset(self) -> MixtureStream:
        rank, world = _resolve_rank(self.trainer, self.rank, self.world_size)
        return MixtureStream(self.tok, self.cfg, self.image_processor, self.tokens_per_image, self.image_token_id,
                             self.seed, rank, world, self.skip_batches)

    def train_dataloader(self) -> DataLoader:
        workers = self.cfg.num_workers
        return _Loader(self.dataset(), batch_size=None, num_workers=workers, persistent_workers=workers > 0)
