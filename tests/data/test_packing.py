"""Packing must not change what the model computes: packed loss == padded loss, per-token logits too.

The packed rows go to the model in the varlen form (k15.data.packing.model_inputs: no attention
mask, documents told apart by restarting position_ids). Packed and padded rows have different
widths, so float32 matmuls and the loss's mean sum in a different order: they agree to float32
rounding, not bit for bit. Measured (llama and qwen2, 5 seeds, sdpa): logits within 6e-8, the loss
(~3.7) within 7.2e-7; eager vs sdpa: logits within 1.1e-7, loss within 2.4e-7. Checked at
atol=1e-6 on logits and rtol=1e-5 on the loss, room for other CPUs' kernels; a leak across
documents moves logits by ~1e-1.
"""

import random

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

from k15.data.packing import IGNORE, document_mask, document_starts, model_inputs, pack_examples

SIZE = dict(vocab_size=40, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, max_position_embeddings=64)
FAMILIES = {"llama": (LlamaConfig, LlamaForCausalLM), "qwen2": (Qwen2Config, Qwen2ForCausalLM)}
LOGITS_ATOL = 1e-6


def tiny(family: str, attn: str = "sdpa"):
    config_cls, model_cls = FAMILIES[family]
    torch.manual_seed(0)
    return model_cls(config_cls(**SIZE, attn_implementation=attn)).eval()  # config.use_cache is True, as usual


def random_examples(n: int, seed: int) -> list[tuple[list[int], list[int]]]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        ids = [rng.randrange(1, 40) for _ in range(rng.randint(3, 20))]
        prompt = rng.randint(1, len(ids) - 1)
        out.append((ids, [IGNORE] * prompt + ids[prompt:]))
    return out


def padded(model, examples):
    """(loss, logits [N, width, V]) with one example per row, right-padded, under a 2D padding mask."""
    width = max(len(i) for i, _ in examples)
    ids = torch.zeros(len(examples), width, dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE)
    mask = torch.zeros(len(examples), width, dtype=torch.long)
    for r, (i, lab) in enumerate(examples):
        lab = [IGNORE, *lab[1:]]  # as the packer: an example's first token is never a target
        ids[r, : len(i)], labels[r, : len(i)], mask[r, : len(i)] = torch.tensor(i), torch.tensor(lab), 1
    out = model(input_ids=ids, attention_mask=mask, labels=labels)
    return out.loss, out.logits


def where_packed(packed) -> list[tuple[int, int]]:
    """(row, start column) of each example, in packing order."""
    places = []
    for r, row in enumerate(packed["position_ids"].tolist()):
        docs = packed["doc_ids"][r].tolist()
        places += [(r, c) for c, (p, d) in enumerate(zip(row, docs)) if p == 0 and d >= 0]
    return places


def run(model, packed):
    with torch.no_grad():
        return model(**model_inputs(packed))


@pytest.mark.parametrize("family", FAMILIES)
def test_packed_equals_padded_loss_and_logits(family):
    model = tiny(family)
    examples = random_examples(12, seed=1)
    packed = pack_examples(examples, row_len=48, pad_id=0)
    assert packed["input_ids"].shape[0] < len(examples)  # several examples per row
    assert (packed["doc_ids"] < 0).any()  # and padding at the end of some row
    out = run(model, packed)
    with torch.no_grad():
        loss, logits = padded(model, examples)
    torch.testing.assert_close(out.loss, loss, rtol=1e-5, atol=0)
    for (ids, _), (r, c), padded_logits in zip(examples, where_packed(packed), logits):
        torch.testing.assert_close(out.logits[r, c : c + len(ids)], padded_logits[: len(ids)], rtol=0, atol=LOGITS_ATOL)


def test_varlen_form_keys():
    packed = pack_examples([([5, 6, 7], [5, 6, 7]), ([8, 9], [IGNORE, 9]), ([1, 2, 3, 4], [1, 2, 3, 4])], row_len=6, pad_id=0)
    inputs = model_inputs(packed)
    assert "attention_mask" not in inputs and inputs["use_cache"] is False
    # segments over the flattened batch: [5 6 7][8 9][pad] | [1 2 3 4][pad pad]
    assert inputs["cu_seq_lens_q"].tolist() == [0, 3, 5, 6, 10, 12] and inputs["cu_seq_lens_q"].dtype == torch.int32
    assert inputs["max_length_q"] == inputs["max_length_k"] == 4 and isinstance(inputs["max_length_q"], int)
    assert document_starts(packed["position_ids"]).tolist() == inputs["cu_seq_lens_k"].tolist()


@pytest.mark.parametrize("family", FAMILIES)
def test_documents_in_one_row_stay_apart(family):
    """Changing document A (and the padding) leaves document B's logits as they were, to the bit."""
    model = tiny(family)
    a, b = ([3, 4, 5, 6, 7], [3, 4, 5, 6, 7]), ([9, 8, 7, 6], [9, 8, 7, 6])
    before = run(model, pack_examples([a, b], row_len=12, pad_id=0)).logits
    other_a = ([11, 12, 13, 14, 15], [11, 12, 13, 14, 15])
    after = run(model, pack_examples([other_a, b], row_len=12, pad_id=17)).logits
    assert torch.equal(before[0, 5:9], after[0, 5:9])
    assert not torch.allclose(before[0, :5], after[0, :5])  # A itself did change
    # and B alone in its row gives the same logits: nothing of A reaches B
    alone = run(model, pack_examples([b], row_len=12, pad_id=0)).logits
    torch.testing.assert_close(before[0, 5:9], alone[0, :4], rtol=0, atol=LOGITS_ATOL)


@pytest.mark.parametrize("family", FAMILIES)
def test_padding_is_ignored_by_the_loss(family):
    model = tiny(family)
    examples = random_examples(5, seed=3)
    loss = run(model, pack_examples(examples, row_len=40, pad_id=0)).loss
    assert torch.equal(loss, run(model, pack_examples(examples, row_len=40, pad_id=23)).loss)


@pytest.mark.parametrize("family", FAMILIES)
def test_eager_equals_sdpa(family):
    packed = pack_examples(random_examples(12, seed=2), row_len=48, pad_id=0)
    sdpa, eager = run(tiny(family, "sdpa"), packed), run(tiny(family, "eager"), packed)
    real = packed["doc_ids"] >= 0
    torch.testing.assert_close(eager.logits[real], sdpa.logits[real], rtol=0, atol=LOGITS_ATOL)
    torch.testing.assert_close(eager.loss, sdpa.loss, rtol=1e-5, atol=0)


def test_varlen_form_equals_the_explicit_document_mask():
    """What the packed path did before (a [B, 1, T, T] mask): the same logits, full-attention rows included."""
    model = tiny("llama")
    packed = pack_examples(random_examples(12, seed=4), row_len=48, pad_id=0)
    # a long-context full-attention row (k15.data.mixture.pack_rows): one document, positions across the row
    used = int((packed["doc_ids"][0] >= 0).sum())
    packed["doc_ids"][0, :used], packed["position_ids"][0, :used] = 0, torch.arange(used)
    with torch.no_grad():
        masked = model(input_ids=packed["input_ids"], position_ids=packed["position_ids"],
                       attention_mask=document_mask(packed["doc_ids"])).logits
    real = packed["doc_ids"] >= 0
    torch.testing.assert_close(run(model, packed).logits[real], masked[real], rtol=0, atol=LOGITS_ATOL)


def reference_flash_varlen(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, dropout_p=0.0,
                           softmax_scale=None, causal=False):
    """flash_attn_varlen_func's contract ([total, heads, dim], int32 offsets, int max lengths), on CPU."""
    assert isinstance(max_seqlen_q, int) and cu_seqlens_q.dtype == torch.int32
    reference_flash_varlen.calls.append(cu_seqlens_q.tolist())
    out = torch.empty_like(q)
    for a, b in zip(cu_seqlens_q[:-1].tolist(), cu_seqlens_q[1:].tolist()):
        assert b - a <= max_seqlen_q
        o = torch.nn.functional.scaled_dot_product_attention(
            *(x[a:b].transpose(0, 1) for x in (q, k, v)), is_causal=causal, scale=softmax_scale, enable_gqa=True)
        out[a:b] = o.transpose(0, 1)
    return out


def test_flash_attention_2_plumbing_gets_the_document_boundaries(monkeypatch):
    """transformers' flash_attention_2 path, with a CPU stand-in for the kernel, on several packed rows.

    From position_ids alone transformers finds documents for flash-attention only in a single row;
    with more rows it would run plain causal attention across each row. The cu_seq_lens that
    model_inputs passes must reach the varlen kernel and give the sdpa logits.
    """
    fau = pytest.importorskip("transformers.modeling_flash_attention_utils")
    if not hasattr(fau, "lazy_import_flash_attention"):
        pytest.skip("this transformers loads flash-attention differently")
    kernels = ((None, reference_flash_varlen, None, None, None),
               (fau._lazy_define_process_function(reference_flash_varlen), dict))
    monkeypatch.setattr(fau, "lazy_import_flash_attention", lambda *a, **k: kernels)
    monkeypatch.setattr(reference_flash_varlen, "calls", [], raising=False)
    model = tiny("qwen2")
    packed = pack_examples(random_examples(12, seed=5), row_len=48, pad_id=0)
    sdpa = run(model, packed)
    model.config._attn_implementation = "flash_attention_2"  # set_attn_implementation would look for flash_attn
    flash = run(model, packed)
    cu = model_inputs(packed)["cu_seq_lens_q"].tolist()
    assert reference_flash_varlen.calls == [cu] * SIZE["num_hidden_layers"]
    real = packed["doc_ids"] >= 0
    torch.testing.assert_close(flash.logits[real], sdpa.logits[real], rtol=0, atol=LOGITS_ATOL)
    torch.testing.assert_close(flash.loss, sdpa.loss, rtol=1e-5, atol=0)


def test_pack_layout_positions_and_labels():
    packed = pack_examples([([5, 6, 7], [5, 6, 7]), ([8, 9], [IGNORE, 9]), ([1, 2, 3, 4], [1, 2, 3, 4])], row_len=6, pad_id=0)
    assert packed["input_ids"].tolist() == [[5, 6, 7, 8, 9, 0], [1, 2, 3, 4, 0, 0]]
    assert packed["position_ids"].tolist() == [[0, 1, 2, 0, 1, 0], [0, 1, 2, 3, 0, 1]]  # padding: a segment of its own
    assert packed["labels"].tolist() == [[IGNORE, 6, 7, IGNORE, 9, IGNORE], [IGNORE, 2, 3, 4, IGNORE, IGNORE]]
    mask = document_mask(packed["doc_ids"])[0, 0]
    assert mask[4].tolist() == [False, False, False, True, True, False]  # token 9 sees only 8, 9
