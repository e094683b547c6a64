"""Vision-language pretraining data: a weighted mixture of webdataset shard sources, packed into rows.

    cfg = MixtureConfig(shards={"text": "shards/text", "ocr": "shards/ocr", "synthetic": "shards/synthetic"},
                        weights={"text": 0.7, "ocr": 0.1, "synthetic": 0.2})
    dm = PretrainDataModule.for_model(vlm, tok, cfg)        # our VLM or a k15.models.hf_vlm wrapper
    for batch in dm.train_dataloader(): loss = vlm(**vlm_inputs(batch)).loss

A source is a named set of shards (k15.data.shards: a directory, glob, brace pattern or list) of any
kind -- text-only, caption, interleaved, OCR, synthetic -- the kind is in each sample, not in the
config. Its weight is its share of training *tokens* (image placeholders included): each next
document comes from the source furthest below its share so far, so the shares of the documents
drawn stay within one document of the weights at every step (the shuffle buffer then mixes them
across nearby batches). A source without a weight (or weight 0) is off, so the stages of
the paper are changes of `weights` over one `shards` table (language-only, then vision, then the
vision share raised to 30%). Every source repeats forever.

A document becomes `<bos> segment ... response <eos>`: text segments are tokenized, every image
becomes the model's `image_tokens(h, w)` (its run of placeholders, or a Pixtral checkpoint's rows
with their breaks; labels IGNORE) and its pixels (the model's ImageProcessor). A document longer
than `seq_len` (or the shortest row of `seq_len_schedule`) is cut, never through an image (the
images past the cut are dropped; a document whose first image does not fit is dropped and counted).
Documents pass a shuffle buffer, then are packed greedily into rows of `seq_len` (k15.data.packing:
positions restart per document, attention stays inside it), and `batch_size` rows make a batch:

    input_ids, labels, position_ids, doc_ids   [batch_size, seq_len]   (as k15.data.packing.pack_examples;
                    with a seq_len_schedule [rows, row length] = MixtureConfig.batch_shape(batch number))
    full_attention_rows  [rows] bool (see below)
    images          list of [C, H, W] tensors, in reading order (row 0 left to right, then row 1, ...)
    source_tokens   [num_sources] real tokens per source in this batch (to log the realised mixture)
    keys            "source/sample key" of every document in the batch, in packing order
    skipped_fraction  this reader's skipped share so far (0-dim), to log as data/skipped_fraction

Long-context activation (the paper's stage 3). With `seq_len_schedule` (e.g. [4096, 16384, 65536]),
batch b of a rank's stream -- counted from the stream's start, so a resumed run (skip_batches) stays
in its phase -- has max(1, batch_size * seq_len // L) rows of L = seq_len_schedule[min(b //
schedule_batches, last)] tokens, so tokens per batch stay about constant. Documents are cut to the
shortest length, so each fits every row; the long contexts are the full-attention rows: a
`full_attention_share` of each batch's rows (0.4 in the paper) whose documents are one sequence (one
doc id, positions running across the row), so attention and long RoPE positions span the row; the
other rows keep attention inside each document. Raising the RoPE base goes with it:
k15.models.rope.set_rope_theta.

Splitting. Each reader -- a (rank, loader worker) slot -- reads a disjoint part of every source, the
same part in every pass: its shards when the source has at least as many shards as there are slots
(shard i goes to slot i mod slots, after a seeded shuffle that all slots agree on; each slot
reshuffles the order of its own shards every pass), else every slot reads all shards and decodes
only the samples whose running index is its own mod slots. Rank and world size come from the
constructor when given (tests), else from the Lightning trainer, else from torch.distributed when it
is initialised, else 0 and 1; the worker from torch's get_worker_info. A resume (`skip_batches`)
replays the uninterrupted stream batch for batch, with loader workers too (reader_slot).

Bad data (k15.data.shards): skipped and counted per reader and source; past `max_skip_fraction` the
run stops with a one-line DataError naming the shard -- raised in the main process even when the
reader is a loader worker (the worker hands the message over instead of a traceback).
"""

from __future__ import annotations

import math
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
    # long-context activation (stage 3): row lengths by phase of `schedule_batches` batches each, the last
    # one kept; empty = rows of seq_len throughout
    seq_len_schedule: list[int] = field(default_factory=list)
    schedule_batches: int = 0
    full_attention_share: float = 0.0  # share of rows whose documents attend to each other
    # a mixture that moves: the shares go linearly from `weights` to `weights_end` over `ramp_batches`
    # batches (e.g. the vision share raised to 30% by the end of joint training); empty = fixed
    weights_end: dict[str, float] = field(default_factory=dict)
    ramp_batches: int = 0

    @property
    def names(self) -> list[str]:
        """The sources, in the order of `shards` (the order of a batch's `source_tokens`)."""
        return list(self.shards)

    def weight(self, name: str) -> float:
        """The source's largest share at any point of the stream (0: the source is never read)."""
        return max(float(self.weights.get(name, 0.0)), float(self.weights_end.get(name, 0.0)))

    def shares_at(self, batch: int) -> torch.Tensor:
        """Normalised token shares of the sources (in `names` order) while batch number `batch` is filled."""
        start = torch.tensor([float(self.weights.get(n, 0.0)) for n in self.names], dtype=torch.float64)
        start = start / start.sum()
        if not self.weights_end:
            return start
        end = torch.tensor([float(self.weights_end.get(n, 0.0)) for n in self.names], dtype=torch.float64)
        f = min(1.0, batch / max(self.ramp_batches, 1))
        return (1 - f) * start + f * end / end.sum()

    @property
    def max_doc_len(self) -> int:
        """Documents are cut here, so that each fits a row of every phase (the shuffle buffer spans phases)."""
        return min([self.seq_len, *self.seq_len_schedule])

    def batch_shape(self, batch: int) -> tuple[int, int]:
        """(rows, row length) of batch number `batch` of the stream: about batch_size * seq_len tokens each."""
        if not self.seq_len_schedule:
            return self.batch_size, self.seq_len
        phase = min(batch // self.schedule_batches, len(self.seq_len_schedule) - 1)
        row_len = self.seq_len_schedule[phase]
        return max(1, self.batch_size * self.seq_len // row_len), row_len

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
        lengths = list(self.seq_len_schedule)
        if any(n < 4 for n in lengths) or lengths != sorted(lengths):
            raise ConfigError(f"mixture seq_len_schedule must be row lengths >= 4, non-decreasing; got {lengths}")
        if lengths and self.schedule_batches < 1:
            raise ConfigError("mixture schedule_batches must be >= 1 when seq_len_schedule is given "
                              f"(batches per phase); got {self.schedule_batches}")
        unknown = sorted(set(self.weights_end) - set(self.shards))
        if unknown:
            raise ConfigError(f"mixture weights_end name unknown sources {unknown}; sources: {', '.join(self.shards)}")
        if self.weights_end and (any(w < 0 for w in self.weights_end.values()) or not any(self.weights_end.values())
                                 or self.ramp_batches < 1):
            raise ConfigError("mixture weights_end must be >= 0 with one > 0, and ramp_batches >= 1")
        if not 0.0 <= self.full_attention_share <= 1.0:
            raise ConfigError(f"mixture full_attention_share must be in [0, 1]; got {self.full_attention_share}")


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
    image_tokens: Callable[[int, int], int | list[int]],
    image_token_id: int,
    max_len: int | None = None,
    train_on_prompt: bool = True,
    image_marks: tuple[tuple[int, ...], tuple[int, ...]] = ((), ()),
) -> tuple[list[int], list[int], list[torch.Tensor]] | None:
    """(ids, labels, pixels) of `<bos> segments response <eos>`, cut to `max_len` (never through an image).

    Returns None when not even the first image fits. `train_on_prompt=False` takes no loss on the
    prompt segments (SFT); pretraining trains on every text token. `image_tokens(h, w)`: the model's
    ids for one image (`model.image_tokens`), or a count: a flat run of that many `image_token_id`.
    `image_marks`: the ids a model writes before and after each image's run (Qwen-VL's vision start /
    end), untrained like the run itself.
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
            image = image_tokens(pixels.shape[-2], pixels.shape[-1])
            image = [image_token_id] * image if isinstance(image, int) else list(image)
            before, after = image_marks
            piece = [*before, *image, *after]
            runs.append((len(ids), len(ids) + len(piece)))
            ids += piece
            labels += [IGNORE] * len(piece)
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


def full_attention_rows(rows: int, share: float) -> torch.Tensor:
    """[rows] bool: row r is full-attention iff floor((r+1) * share) > floor(r * share) -- floor(rows * share)
    rows, spread evenly over the batch."""
    # the epsilon keeps float error (3 * 0.4 = 1.2000000000000002, 0.3 * 10 = 3.0000000000000004) from moving a row
    marks = [math.floor((r + 1) * share + 1e-9) > math.floor(r * share + 1e-9) for r in range(rows)]
    return torch.tensor(marks, dtype=torch.bool)


def pack_rows(examples: list[Example], row_len: int, pad_id: int, num_sources: int,
              full_attention_share: float = 0.0) -> dict:
    """pack_examples on the examples, plus their images in reading order and tokens per source.

    A full-attention row (full_attention_rows) joins its documents into one: a single doc id and
    positions 0..used-1 across the row, so attention and RoPE positions span the whole row.
    """
    packed = pack_examples([(e.ids, e.labels) for e in examples], row_len, pad_id)
    full = full_attention_rows(packed["input_ids"].shape[0], full_attention_share)
    for r in full.nonzero().flatten().tolist():
        used = int((packed["doc_ids"][r] >= 0).sum())  # real tokens come first, padding after
        packed["doc_ids"][r, :used] = 0
        packed["position_ids"][r, :used] = torch.arange(used)
        # labels keep IGNORE at each document's first token (its <bos>): predicting it from the
        # previous document's <eos> teaches nothing
    packed["full_attention_rows"] = full
    packed["images"] = [img for e in examples for img in e.images]  # greedy packing keeps the order
    counts = torch.zeros(num_sources, dtype=torch.long)
    for e in examples:
        counts[e.source] += len(e.ids)
    packed["source_tokens"] = counts
    packed["keys"] = [e.key for e in examples]
    return packed


# ------------------------------------------------------------------------------------------------
# The stream


def reader_slot(rank: int, world_size: int, skip_batches: int = 0) -> tuple[int, int, int, int]:
    """(this reader's slot, number of slots, its worker role, number of workers) over ranks x loader workers.

    The loader takes its workers in turn from worker 0, also after a resume; so that the resumed
    stream is the uninterrupted one batch for batch, worker w takes the role (the part of the data
    and the batch numbers) of the worker that served batch skip_batches + w.
    """
    info = get_worker_info()
    worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
    role = (worker + skip_batches) % workers
    return rank * workers + role, world_size * workers, role, workers


@dataclass
class _Failure:
    message: str


class MixtureStream(IterableDataset):
    """An endless stream of packed batches from the weighted sources (one reader slot's share)."""

    def __init__(self, tok, cfg: MixtureConfig, image_processor, image_tokens, image_token_id: int,
                 seed: int = 0, rank: int = 0, world_size: int = 1, skip_batches: int = 0, image_marks=((), ())):
        cfg.validate()
        if tok.pad_token_id is None:
            raise ConfigError("the tokenizer has no pad token (packing pads rows with it)")
        self.tok, self.cfg = tok, cfg
        self.image_processor, self.image_tokens = image_processor, image_tokens
        self.image_token_id, self.seed, self.image_marks = image_token_id, seed, image_marks
        self.rank, self.world_size, self.skip_batches = rank, world_size, skip_batches
        # only sources that are on are looked up, so a stage can leave out shards it does not have yet
        self.shards = [expand_shards(cfg.shards[n]) if cfg.weight(n) > 0 else [] for n in cfg.names]
        self.counters: list[SkipCounter] = []
        self.dropped_long = 0
        self._filling = 0  # the batch number being filled

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
        streams = [self._documents(i, slot, slots) if cfg.weight(n) > 0 else None for i, n in enumerate(cfg.names)]
        tokens = torch.zeros(len(streams), dtype=torch.float64)
        # With moving shares, older tokens fade (a horizon of ~1000 documents), so the realised share
        # follows the current target instead of over-shooting to make up for the whole history.
        fade = 0.999 if cfg.weights_end else 1.0
        dropped_in_a_row = 0
        while True:
            weights = cfg.shares_at(self._filling)
            tokens *= fade
            deficit = weights * tokens.sum() - tokens
            deficit[weights == 0] = -float("inf")
            source = int(torch.argmax(deficit))  # ties: the first source
            doc = next(streams[source])
            encoded = tokenize_document(doc, self.tok, self.image_processor, self.image_tokens,
                                        self.image_token_id, cfg.max_doc_len, image_marks=self.image_marks)
            if encoded is None:
                self.dropped_long += 1
                dropped_in_a_row += 1
                if dropped_in_a_row >= 1000:
                    raise DataError(f"source '{cfg.names[source]}': 1000 documents in a row have an image that "
                                    f"does not fit {cfg.max_doc_len} tokens (last: {doc.url}: '{doc.key}')")
                continue
            dropped_in_a_row = 0
            ids, labels, images = encoded
            tokens[source] += len(ids)
            yield Example(ids, labels, images, source, f"{cfg.names[source]}/{doc.key}")

    def _batches(self, slot: int, slots: int, first: int = 0, stride: int = 1) -> Iterator[dict]:
        """Packed batches; the i-th is batch number first + i * stride of the stream (its schedule phase)."""
        cfg = self.cfg
        rng = random.Random(f"{self.seed}/shuffle/{slot}")
        buffer: list[Example] = []
        rows: list[list[Example]] = [[]]
        used = 0
        number = self._filling = first
        n_rows, row_len = cfg.batch_shape(number)
        for example in self._examples(slot, slots):
            buffer.append(example)
            if len(buffer) < cfg.shuffle_buffer:
                continue
            example = buffer.pop(rng.randrange(len(buffer)))
            if used + len(example.ids) > row_len:
                rows.append([])
                used = 0
                if len(rows) > n_rows:  # n_rows complete rows and one open row
                    done = [e for row in rows[:n_rows] for e in row]
                    rows = rows[n_rows:]
                    batch = pack_rows(done, row_len, self.tok.pad_token_id, len(cfg.names), cfg.full_attention_share)
                    batch["skipped_fraction"] = torch.tensor(max((c.fraction for c in self.counters), default=0.0))
                    yield batch
                    # the open row (empty, the example goes in below) fills to the next batch's length
                    number += stride
                    self._filling = number  # the mixture's shares move with it (MixtureConfig.shares_at)
                    n_rows, row_len = cfg.batch_shape(number)
            rows[-1].append(example)
            used += len(example.ids)

    def __iter__(self) -> Iterator[dict]:
        slot, slots, role, workers = reader_slot(self.rank, self.world_size, self.skip_batches)
        policy = SkipPolicy(self.cfg.max_skip_fraction, self.cfg.min_samples_before_failing)
        self.counters = [SkipCounter(name, policy) for name in self.cfg.names]
        info = get_worker_info()
        skip = len(range(role, self.skip_batches, workers))  # this role's share of the batches already served
        try:
            # batch i of this role is batch i * workers + role of the rank's stream (the loader takes
            # the workers in turn), the number its schedule phase is read from
            for i, batch in enumerate(self._batches(slot, slots, role, workers)):
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
        image_tokens: Callable[[int, int], int | list[int]],  # see tokenize_document
        image_token_id: int,
        seed: int = 0,
        rank: int | None = None,
        world_size: int | None = None,
        image_marks: tuple[tuple[int, ...], tuple[int, ...]] = ((), ()),  # see tokenize_document
    ):
        super().__init__()
        cfg.validate()
        self.tok, self.cfg, self.seed = tok, cfg, seed
        self.image_processor, self.image_tokens = image_processor, image_tokens
        self.image_token_id, self.image_marks = image_token_id, image_marks
        self.rank, self.world_size = rank, world_size
        self.skip_batches = 0

    @classmethod
    def for_model(cls, model, tok: PreTrainedTokenizerBase, cfg: MixtureConfig, seed: int = 0,
                  rank: int | None = None, world_size: int | None = None) -> PretrainDataModule:
        """Image processing and placeholder counts from the model (k15 VLM or hf_vlm wrapper)."""
        return cls(tok, cfg, model.image_processor(), model.image_tokens, model.image_token_id, seed, rank,
                   world_size, image_marks=getattr(model, "image_marks", ((), ())))  # Qwen-VL's vision start / end

    def resume_from(self, batches: int) -> None:
        """Skip the first `batches` batches of the stream (deterministic fast-forward on resume)."""
        self.skip_batches = batches

    def dataset(self) -> MixtureStream:
        rank, world = _resolve_rank(self.trainer, self.rank, self.world_size)
        return MixtureStream(self.tok, self.cfg, self.image_processor, self.image_tokens, self.image_token_id,
                             self.seed, rank, world, self.skip_batches, self.image_marks)

    def train_dataloader(self) -> DataLoader:
        workers = self.cfg.num_workers
        return _Loader(self.dataset(), batch_size=None, num_workers=workers, persistent_workers=workers > 0)
