"""VLMTrainModule: the loss falls, frozen parts stay bit-identical, the OCR loss reads, TensorBoard gets the metrics."""

from __future__ import annotations

import itertools

import lightning as L
import pytest
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch.utils.data import DataLoader

from k15.config import OptimConfig
from k15.data.mixture import Example, pack_rows, tokenize_document, vlm_inputs
from k15.data.shards import Document
from k15.errors import ConfigError, DataError
from k15.modules.vlm_train import VLMTrainModule, cell_targets, ocr_batch, ocr_batches, ocr_loss
from k15.synthetic.images import render_text, vision_docs

OPTIM = OptimConfig(lr=3e-3, warmup_steps=1, weight_decay=0.1, min_lr_ratio=1.0)


def mixture_batch(vlm, tok, per_kind: int = 3, seq_len: int = 128) -> dict:
    """A packed batch as the mixture DataModule makes it: problem, ocr and count documents."""
    examples = []
    for d in itertools.chain.from_iterable(vision_docs(k, per_kind, seed=5) for k in ("problem", "ocr", "count")):
        ids, labels, images = tokenize_document(Document(d.key, d.kind, d.segments, d.response), tok,
                                                vlm.image_processor(), vlm.tokens_per_image, vlm.image_token_id,
                                                seq_len)
        examples.append(Example(ids, labels, images, 0, d.key))
    return pack_rows(examples, seq_len, tok.pad_token_id, 1)


def lm_loss(vlm, batch) -> float:
    with torch.no_grad():
        return vlm(**vlm_inputs(batch)).loss.item()


def fit(module: VLMTrainModule, batch: dict, steps: int, log_dir=None) -> L.Trainer:
    logger = TensorBoardLogger(str(log_dir), name="tb", version="vlm") if log_dir else False
    module.model.train()  # make_vlm hands out eval-mode models
    trainer = L.Trainer(accelerator="cpu", max_steps=steps, logger=logger, log_every_n_steps=1,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(module, DataLoader([batch] * steps, batch_size=None))
    return trainer


def snapshot(vlm) -> dict[str, torch.Tensor]:
    return {k: p.detach().clone() for k, p in vlm.named_parameters()}


def optimizer_params(trainer: L.Trainer) -> set[int]:
    return {id(p) for g in trainer.optimizers[0].param_groups for p in g["params"]}


def test_tower_only_stage_moves_tower_and_projector_and_never_the_decoder(tok, make_vlm):
    vlm = make_vlm(kind="embedding_softmax")
    batch = mixture_batch(vlm, tok)
    before, first = snapshot(vlm), lm_loss(vlm, batch)
    module = VLMTrainModule(vlm, OPTIM, max_steps=6, trainable=("tower", "projector"))
    assert module.trainable_counts["decoder"] == 0 and module.trainable_counts["tower"] > 0
    trainer = fit(module, batch, 6)
    assert lm_loss(vlm, batch) < 0.995 * first  # through the frozen decoder: ~2-3% in 6 steps
    after = dict(vlm.named_parameters())
    for name, old in before.items():
        if name.startswith("decoder."):  # frozen (weight decay 0.1 would move it if it were optimised)
            assert torch.equal(old, after[name]), name
        else:
            assert not torch.equal(old, after[name]), name
    trainable = {id(p) for n, p in vlm.named_parameters() if not n.startswith("decoder.")}
    assert optimizer_params(trainer) == trainable


def test_joint_training_moves_every_part(tok, make_vlm):
    vlm = make_vlm()
    batch = mixture_batch(vlm, tok)
    before, first = snapshot(vlm), lm_loss(vlm, batch)
    trainer = fit(VLMTrainModule(vlm, OPTIM, max_steps=6), batch, 6)
    assert lm_loss(vlm, batch) < 0.9 * first
    after = dict(vlm.named_parameters())
    changed = {name.split(".")[0] for name, old in before.items() if not torch.equal(old, after[name])}
    assert changed == {"tower", "projector", "decoder"}
    assert optimizer_params(trainer) == {id(p) for p in vlm.parameters()}


def test_ocr_loss_teaches_the_tower_to_read_and_everything_is_logged(tok, make_vlm, tmp_path):
    vlm = make_vlm(kind="embedding_softmax")
    batch = mixture_batch(vlm, tok, per_kind=1)
    held = ocr_batch([(render_text(t), t) for t in ("12+3=", "abc", "9-4", "x")], vlm, tok)
    with torch.no_grad():
        first, _ = ocr_loss(vlm, held)
    module = VLMTrainModule(vlm, OPTIM, max_steps=8, trainable=("tower", "projector"), ocr_weight=1.0,
                            ocr_stream=ocr_batches(vlm, tok, batch_size=16))
    fit(module, batch, 8, tmp_path)
    with torch.no_grad():
        last, _ = ocr_loss(vlm, held)
    assert last < 0.8 * first, (first.item(), last.item())
    events = EventAccumulator(str(tmp_path / "tb" / "vlm"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"train/loss", "train/lm_loss", "train/ocr_loss", "train/ocr_acc", "lr", "perf/tokens_per_s"} <= tags
    assert len(events.Scalars("train/loss")) == 8
    # the optimised total is lm + weight * ocr
    total, lm, ocr = (events.Scalars(t)[-1].value for t in ("train/loss", "train/lm_loss", "train/ocr_loss"))
    assert total == pytest.approx(lm + ocr, rel=1e-5)


def test_cell_targets_are_right_aligned_with_blank_cells_as_spaces(tok):
    assert tok.decode(cell_targets("7-2", 5, tok)) == "  7-2"
    with pytest.raises(DataError, match="has 6 characters but the strip has 5 cells"):
        cell_targets("123456", 5, tok)


def test_bad_configurations_and_ocr_data_fail_clearly(tok, make_vlm):
    mlp = make_vlm()
    with pytest.raises(ConfigError, match="only k15's embedding_softmax projector has; for a transformers VLM set the ocr_weight to 0"):
        VLMTrainModule(mlp, OPTIM, 4, ocr_weight=1.0, ocr_stream=iter([]))
    with pytest.raises(ConfigError, match=r"non-empty subset of tower, projector, decoder; got \['towr'\]"):
        VLMTrainModule(mlp, OPTIM, 4, trainable=("towr",))
    softmax = make_vlm(kind="embedding_softmax")
    with pytest.raises(ConfigError, match="needs an ocr_stream"):
        VLMTrainModule(softmax, OPTIM, 4, ocr_weight=1.0)
    with pytest.raises(DataError, match="gives 4 image tokens, not one per each of its 14 character cells"):
        ocr_batch([(torch.zeros(3, 16, 16), "ab")], softmax, tok)


def test_fits_on_the_mixture_datamodule_over_shards(tok, make_vlm, tmp_path):
    """The module as the pipeline will use it: Lightning draws packed batches from webdataset shards."""
    from k15.data.mixture import MixtureConfig, PretrainDataModule
    from k15.data.shards import write_shards

    write_shards(vision_docs("ocr", 24, seed=0), tmp_path / "ocr" / "ocr-%06d.tar", 8)
    write_shards(vision_docs("problem", 24, seed=0), tmp_path / "problem" / "problem-%06d.tar", 24)
    cfg = MixtureConfig(shards={"ocr": str(tmp_path / "ocr"), "problem": str(tmp_path / "problem")},
                        weights={"ocr": 0.5, "problem": 0.5}, seq_len=64, batch_size=4, shuffle_buffer=8)
    vlm = make_vlm(kind="embedding_softmax").train()
    before = snapshot(vlm)
    module = VLMTrainModule(vlm, OPTIM, max_steps=3, trainable=("tower", "projector"), ocr_weight=0.5,
                            ocr_stream=ocr_batches(vlm, tok, batch_size=4))
    trainer = L.Trainer(accelerator="cpu", max_steps=3, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(module, datamodule=PretrainDataModule.for_model(vlm, tok, cfg))
    assert trainer.global_step == 3
    after = dict(vlm.named_parameters())
    assert all(torch.equal(v, after[k]) for k, v in before.items() if k.startswith("decoder."))
    assert not torch.equal(before["tower.patch_embed.weight"], after["tower.patch_embed.weight"])
    assert torch.isfinite(trainer.callback_metrics["train/loss"])


def test_reading_batches_take_turns_between_strips_and_scenes(tok):
    from k15.config import ModelConfig
    from k15.models.projector import ProjectorConfig
    from k15.models.vision import VisionConfig
    from k15.models.vlm import build_vlm

    vlm = build_vlm(ModelConfig(hidden_size=32, num_layers=1, num_heads=2, num_kv_heads=2, intermediate_size=32), tok,
                    VisionConfig(hidden_size=32, intermediate_size=32), ProjectorConfig(kind="embedding_softmax"))
    stream = ocr_batches(vlm, tok, batch_size=3, kinds=("ocr", "scene"))
    strips, scenes = next(stream), next(stream)
    assert [len(t) for t in strips["targets"]] == [14] * 3 and [len(t) for t in scenes["targets"]] == [9] * 3
    readout = vlm.projector.readout_ids.tolist()
    letters = {tok.decode([readout[i]]) for t in scenes["targets"] for i in t.tolist()}
    assert letters <= {"c", "s", "t", " "} and letters - {" "}
    loss, _ = ocr_loss(vlm, scenes)
    assert torch.isfinite(loss)
    with pytest.raises(ConfigError, match="reading kinds must be some of ocr, scene"):
        next(ocr_batches(vlm, tok, 2, kinds=("scenes",)))
