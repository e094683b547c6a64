"""The tiny default VLM (default model, tower and projector configs) trains from scratch on CPU."""

from __future__ import annotations

import itertools

import torch

from k15.config import ModelConfig
from k15.data.mixture import Example, pack_rows, tokenize_document, vlm_inputs
from k15.data.shards import Document
from k15.models.vlm import build_vlm, freeze
from k15.synthetic.images import vision_docs


def synthetic_batch(vlm, tok, per_kind: int = 5, seq_len: int = 128) -> dict:
    """A packed batch of image documents of five kinds (about 10 rows)."""
    kinds = ["problem", "ocr", "count", "chart", "caption"]
    examples = []
    for d in itertools.chain.from_iterable(vision_docs(k, per_kind, seed=3) for k in kinds):
        doc = Document(d.key, d.kind, d.segments, d.response)
        ids, labels, images = tokenize_document(doc, tok, vlm.image_processor(), vlm.tokens_per_image,
                                                vlm.image_token_id, seq_len)
        examples.append(Example(ids, labels, images, 0, d.key))
    return pack_rows(examples, seq_len, tok.pad_token_id, 1)


def test_tiny_default_vlm_trains_from_scratch(tok):
    torch.manual_seed(0)
    vlm = build_vlm(ModelConfig(), tok)  # the defaults: the tiny decoder, 16-px tower, MLP projector
    batch = synthetic_batch(vlm, tok)
    assert len(batch["images"]) == 25
    opt = torch.optim.AdamW(vlm.parameters(), lr=3e-3)
    tower_before = vlm.tower.patch_embed.weight.detach().clone()

    def loss() -> torch.Tensor:
        return vlm(**vlm_inputs(batch)).loss

    vlm.train()
    with torch.no_grad():
        first = loss().item()
    for _ in range(20):
        opt.zero_grad()
        loss().backward()
        opt.step()
    with torch.no_grad():
        last = loss().item()
    assert last < 0.8 * first, (first, last)
    assert not torch.equal(tower_before, vlm.tower.patch_embed.weight)

    # the tower-only stage: decoder frozen, the loss still falls through the image tokens alone
    freeze(vlm, ("decoder",))
    decoder_before = {k: v.clone() for k, v in vlm.decoder.state_dict().items()}
    opt = torch.optim.AdamW([p for p in vlm.parameters() if p.requires_grad], lr=3e-3)
    for _ in range(4):
        opt.zero_grad()
        loss().backward()
        opt.step()
    assert all(torch.equal(v, vlm.decoder.state_dict()[k]) for k, v in decoder_before.items())
