"""Packing must not change what the model computes: packed loss == padded loss, logits too."""

import random

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from k15.data.packing import IGNORE, document_mask, model_inputs, pack_examples


def random_examples(n: int, seed: int) -> list[tuple[list[int], list[int]]]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        ids = [rng.randrange(1, 40) for _ in range(rng.randint(3, 20))]
        prompt = rng.randint(1, len(ids) - 1)
        out.append((ids, [IGNORE] * prompt + ids[prompt:]))
    return out


def padded_loss(model, examples) -> torch.Tensor:
    width = max(len(i) for i, _ in examples)
    ids = torch.zeros(len(examples), width, dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE)
    mask = torch.zeros(len(examples), width, dtype=torch.long)
    for r, (i, lab) in enumerate(examples):
        ids[r, : len(i)], labels[r, : len(i)], mask[r, : len(i)] = torch.tensor(i), torch.tensor(lab), 1
    return model(input_ids=ids, attention_mask=mask, labels=labels).loss


def test_packed_loss_equals_padded_loss():
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=40, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)).eval()
    examples = random_examples(12, seed=1)
    packed = pack_examples(examples, row_len=48, pad_id=0)
    assert packed["input_ids"].shape[0] < len(examples)  # several examples per row
    with torch.no_grad():
        torch.testing.assert_close(model(**model_inputs(packed)).loss, padded_loss(model, examples), rtol=1e-5, atol=1e-6)


def test_pack_layout_positions_and_labels():
    packed = pack_examples([([5, 6, 7], [5, 6, 7]), ([8, 9], [IGNORE, 9]), ([1, 2, 3, 4], [1, 2, 3, 4])], row_len=6, pad_id=0)
    assert packed["input_ids"].tolist() == [[5, 6, 7, 8, 9, 0], [1, 2, 3, 4, 0, 0]]
    assert packed["position_ids"].tolist() == [[0, 1, 2, 0, 1, 0], [0, 1, 2, 3, 0, 0]]
    assert packed["labels"].tolist() == [[IGNORE, 6, 7, IGNORE, 9, IGNORE], [IGNORE, 2, 3, 4, IGNORE, IGNORE]]
    mask = document_mask(packed["doc_ids"])[0, 0]
    assert mask[4].tolist() == [False, False, False, True, True, False]  # token 9 sees only 8, 9
