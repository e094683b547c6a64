"""Vision-language training: next-token loss on the mixture DataModule's packed image+text batches.

    module = VLMTrainModule(vlm, optim, max_steps, trainable=("tower", "projector"))   # tower-only stage
    module = VLMTrainModule(vlm, optim, max_steps)                                     # joint: every part
    module = VLMTrainModule(vlm, optim, max_steps, trainable=("tower", "projector"),
                            ocr_weight=1.0, ocr_stream=ocr_batches(vlm, tok, 32))      # + the reading loss
    trainer.fit(module, datamodule=PretrainDataModule.for_model(vlm, tok, mixture))

`trainable` names the parts (of tower, projector, decoder) that learn; the others are frozen with
`k15.models.vlm.freeze` and left out of the optimizer, so they stay bit-identical. The tower-only
stage trains tower + projector through the frozen decoder's LM loss; joint training trains all.

The OCR (reading) loss is what made a tiny tower learn to read (shared/calibration.md): for an
embedding_softmax projector, every image token of a text strip is classified as the character in
its cell (`readout_logits`, cross-entropy over the readout tokens). It needs images with one token
per character cell and their texts, which the mixture batches do not carry, so it comes from its own
stream of OCR batches (`ocr_batches`, synthetic strips), one per training step, weighted by
`ocr_weight`. Its batch i depends only on the seed and i, so a resumed stage continues it (`start`).
`lm_weight` scales the next-token loss: a tower that cannot read yet gets large, noisy gradients
through the frozen decoder, which drown the reading loss under gradient clipping, so the
tower-only stage of the vision quickstart keeps it small.

Logged (TensorBoard via the trainer's logger): train/loss (the optimised total), train/lm_loss,
train/ocr_loss and train/ocr_acc (with OCR), lr, perf/tokens_per_s (real tokens of the LM batch).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator, Sequence

import lightning as L
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from transformers import PreTrainedTokenizerBase

from k15.config import OptimConfig
from k15.data.mixture import vlm_inputs
from k15.distributed import configure_fsdp2
from k15.data.packing import IGNORE
from k15.errors import ConfigError, DataError
from k15.models.vlm import PARTS, freeze
from k15.callbacks.throughput import ThroughputLogger
from k15.modules.lm import warmup_cosine
from k15.synthetic.images import STRIP_CELLS, vision_docs
from k15.tokenizer import char_token_ids

SCENE_CELLS = 9  # a 48x48 scene: a 3x3 grid of 16-px cells, one image token each with 16-px patches

# ------------------------------------------------------------------------------------------------
# OCR data and loss


def cell_targets(text: str, cells: int, tok: PreTrainedTokenizerBase) -> list[int]:
    """Token id per cell of a right-aligned strip (k15.synthetic.images.render_text); blank cells read as ' '."""
    if len(text) > cells:
        raise DataError(f"{text!r} has {len(text)} characters but the strip has {cells} cells")
    chars = " " * (cells - len(text)) + text
    ids = char_token_ids(tok, chars)  # not convert_tokens_to_ids: a byte-level vocabulary spells " " as "Ġ"
    unknown = sorted({c for c, i in zip(chars, ids) if i is None})
    if unknown:
        raise DataError(f"OCR characters without a token of their own: {unknown}")
    return ids


def ocr_batch(pairs: Iterable[tuple[Image.Image | torch.Tensor, str]], vlm: nn.Module,
              tok: PreTrainedTokenizerBase, cells: int = STRIP_CELLS) -> dict:
    """{"images": pixels, "targets": readout-row index per image token} for (strip image, its text) pairs.

    Each image must come out as exactly `cells` image tokens (one per character cell), else DataError.
    Targets index the projector's readout rows; a character that is not a readout token is a DataError.
    """
    readout = vlm.projector.readout_ids.tolist()
    row_of = {token: row for row, token in enumerate(readout)}
    processor = vlm.image_processor()
    images, targets = [], []
    for image, text in pairs:
        pixels = processor(image) if isinstance(image, Image.Image) else image
        n = vlm.tokens_per_image(pixels.shape[-2], pixels.shape[-1])
        if n != cells:
            raise DataError(f"an OCR image of {pixels.shape[-2]}x{pixels.shape[-1]} px gives {n} image tokens, "
                            f"not one per each of its {cells} character cells")
        ids = cell_targets(text, cells, tok)
        missing = sorted({tok.convert_ids_to_tokens(i) for i in ids if i not in row_of})
        if missing:
            raise DataError(f"OCR characters that are not projector readout tokens: {missing}")
        images.append(pixels)
        targets.append(torch.tensor([row_of[i] for i in ids], dtype=torch.long))
    return {"images": images, "targets": targets}


def ocr_batches(vlm: nn.Module, tok: PreTrainedTokenizerBase, batch_size: int, seed: int = 0,
                cells: int = STRIP_CELLS, kinds: Sequence[str] = ("ocr",), start: int = 0) -> Iterator[dict]:
    """Endless reading batches of the synthetic world's training split, the kinds taking turns:
    "ocr" (random strings as strips of `cells` cells) and "scene" (shapes; each cell reads as its letter).
    Batch i is a pure function of (seed, i): `start` resumes the stream where a run left it."""
    unknown = sorted(set(kinds) - {"ocr", "scene"})
    if unknown or not kinds:
        raise ConfigError(f"reading kinds must be some of ocr, scene; got {list(kinds)}")
    for epoch in itertools.count(start):
        kind = kinds[epoch % len(kinds)]
        step_seed = seed * 1_000_003 + epoch
        if kind == "ocr":
            docs = vision_docs("ocr", batch_size, split="train", seed=step_seed, cells=cells)
            yield ocr_batch(((d.segments[0], d.answer) for d in docs), vlm, tok, cells)
        else:
            docs = vision_docs("scene", batch_size, split="train", seed=step_seed)
            yield ocr_batch(((d.segments[0], d.answer) for d in docs), vlm, tok, SCENE_CELLS)


def ocr_loss(vlm: nn.Module, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """(cross-entropy, accuracy) of the readout logits against each image token's cell target."""
    logits = torch.cat(vlm.readout_logits(batch["images"]), dim=0).float()
    targets = torch.cat(list(batch["targets"])).to(logits.device)
    loss = F.cross_entropy(logits, targets, ignore_index=IGNORE)
    keep = targets != IGNORE
    accuracy = (logits.argmax(-1)[keep] == targets[keep]).float().mean()
    return loss, accuracy


# ------------------------------------------------------------------------------------------------
# The module


class VLMTrainModule(L.LightningModule):
    """Next-token loss of a VLM (k15's or an hf_vlm wrapper) on packed mixture batches, parts frozen as asked."""

    stage_name = "vlm"

    def __init__(
        self,
        model: nn.Module,
        optim: OptimConfig,
        max_steps: int,
        trainable: Sequence[str] = PARTS,
        ocr_weight: float = 0.0,
        lm_weight: float = 1.0,
        ocr_stream: Iterator[dict] | None = None,
    ):
        super().__init__()
        trainable = tuple(trainable)
        unknown = sorted(set(trainable) - set(PARTS))
        if unknown or not trainable:
            raise ConfigError(f"trainable parts must be a non-empty subset of {', '.join(PARTS)}; "
                              f"got {list(trainable)}")
        if ocr_weight < 0 or lm_weight < 0 or ocr_weight + lm_weight == 0:
            raise ConfigError(f"ocr_weight and lm_weight must be >= 0, not both 0; got {ocr_weight}, {lm_weight}")
        if ocr_weight > 0:
            kind = getattr(getattr(getattr(model, "projector", None), "cfg", None), "kind", None)
            if kind != "embedding_softmax":
                raise ConfigError("the OCR loss (vision_tower.ocr_weight, vision_joint.ocr_weight) reads readout_logits, which only "
                                  "k15's embedding_softmax projector has; for a transformers VLM set the ocr_weight to 0")
            if ocr_stream is None:
                raise ConfigError("ocr_weight > 0 needs an ocr_stream of OCR batches (see ocr_batches)")
        self.model, self.optim, self.max_steps = model, optim, max_steps
        self.trainable = trainable
        self.ocr_weight, self.ocr_stream, self.lm_weight = ocr_weight, ocr_stream, lm_weight
        self.trainable_counts = freeze(model, tuple(p for p in PARTS if p not in trainable))
        self.step_tokens = 0

    def configure_model(self) -> None:
        configure_fsdp2(self, self.model)  # FSDP2 (decoder layers and vision blocks) under trainer.strategy=fsdp2

    def training_step(self, batch, batch_idx):
        lm = self.model(**vlm_inputs(batch)).loss
        loss = self.lm_weight * lm
        self.log("train/lm_loss", lm)
        if self.ocr_weight > 0:
            ocr = next(self.ocr_stream)
            ocr = {"images": [img.to(self.device) for img in ocr["images"]], "targets": ocr["targets"]}
            reading, accuracy = ocr_loss(self.model, ocr)
            loss = loss + self.ocr_weight * reading
            self.log("train/ocr_loss", reading)
            self.log("train/ocr_acc", accuracy)
        self.log("train/loss", loss, prog_bar=True)
        self.log_data(batch)
        self.step_tokens = int((batch["doc_ids"] >= 0).sum())  # real (non-padding) tokens, for tokens/s
        return loss

    def log_data(self, batch: dict) -> None:
        """The mixture as realised (token share per source), skipped bad samples, the row length."""
        names = getattr(self, "source_names", None)
        tokens = batch.get("source_tokens")
        if names and tokens is not None and int(tokens.sum()) > 0:
            for name, share in zip(names, (tokens.float() / tokens.sum()).tolist()):
                self.log(f"data/share_{name}", share)
        if "skipped_fraction" in batch:
            self.log("data/skipped_fraction", float(batch["skipped_fraction"]))
        self.log("data/seq_len", float(batch["input_ids"].shape[1]))

    def configure_callbacks(self):
        return [ThroughputLogger()]

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.model.parameters() if p.requires_grad]

    def configure_optimizers(self):
        # Only trainable parameters: AdamW's weight decay would otherwise still move frozen weights,
        # and their (zero) state would cost memory.
        o = self.optim
        params = self.trainable_parameters()
        decay = [p for p in params if p.ndim >= 2]
        no_decay = [p for p in params if p.ndim < 2]
        opt = torch.optim.AdamW(
            [{"params": decay, "weight_decay": o.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
            lr=o.lr, betas=(o.beta1, o.beta2),
        )
        sched = torch.optim.lr_scheduler.LambdaLR(opt, warmup_cosine(o, self.max_steps))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
