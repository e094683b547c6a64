"""Qwen2-VL / Qwen2.5-VL (M-RoPE) through the VisionRolloutEngine: equal to HF generate, to the training
forward, and to itself when a response is generated in budgeted segments; each prompt's images encoded once.

The checkpoints are tiny and random, made here: head_dim 16 with mrope_section [2, 3, 3], so the t, h
and w axes each own some rotary frequencies. Images of different sizes (16x32, 32x32, 48x16, 32x48
with 8-px patches and a 2x2 merge: 1x2, 2x2, 3x1, 2x3 tokens) give h and w positions that differ from
t and from each other, and prompts with 0, 1 and 2 images share each batch.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import (Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration, Qwen2VLConfig,
                          Qwen2VLForConditionalGeneration)

from k15.errors import ConfigError
from k15.models.hf_vlm import load_hf_vlm
from k15.models.vlm import expand_placeholders
from k15.rl.batch import token_logprobs
from k15.rollout.partial import PartialRollouts
from k15.rollout.sampling import SamplingParams
from k15.rollout.vision import ImagePrompt, VisionRolloutEngine
from tests.rollout.test_partial import in_segments

IMG, VIDEO, START, END = 8, 9, 10, 11  # image / video placeholders, vision start / end
EOS = 2
FAMILIES = ["qwen2_5_vl", "qwen2_vl"]


def save_qwen_vl(family: str, path) -> None:
    """A tiny random-init checkpoint (HF's own init, nothing perturbed).

    The decoder's init scale is 0.1, not 0.02: at 0.02 attention is so nearly uniform that greedy tokens do
    not depend on positions at all, and the greedy comparison could not tell M-RoPE from 1D positions.
    """
    torch.manual_seed(0)
    text = dict(vocab_size=64, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                num_key_value_heads=2, max_position_embeddings=256, bos_token_id=1, eos_token_id=EOS, pad_token_id=0,
                initializer_range=0.1,
                rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 3, 3]})
    ids = dict(image_token_id=IMG, video_token_id=VIDEO, vision_start_token_id=START, vision_end_token_id=END)
    if family == "qwen2_vl":
        vision = dict(depth=2, embed_dim=32, hidden_size=64, num_heads=2, patch_size=8, spatial_merge_size=2,
                      temporal_patch_size=2, mlp_ratio=2)
        model = Qwen2VLForConditionalGeneration(Qwen2VLConfig(text_config=text, vision_config=vision, **ids))
    else:
        vision = dict(depth=2, hidden_size=32, out_hidden_size=64, intermediate_size=64, num_heads=2, patch_size=8,
                      spatial_merge_size=2, temporal_patch_size=2, window_size=32, fullatt_block_indexes=[1])
        model = Qwen2_5_VLForConditionalGeneration(Qwen2_5_VLConfig(text_config=text, vision_config=vision, **ids))
    model.save_pretrained(path)


@pytest.fixture(scope="module", params=FAMILIES)
def qwen(request, tmp_path_factory):
    path = tmp_path_factory.mktemp(request.param)
    save_qwen_vl(request.param, path)
    model = load_hf_vlm(path).eval()
    # HF generate may pick the placeholder; the engine never does (k15.rollout.vision): compare like with like.
    model.model.generation_config.suppress_tokens = [IMG]
    return model


def image(h: int, w: int, seed: int) -> torch.Tensor:
    return torch.randn(3, h, w, generator=torch.Generator().manual_seed(seed))


def expanded(vlm, ids: list[int], images: list) -> ImagePrompt:
    """The prompt as RLModule sends it: placeholder runs already expanded."""
    counts = [vlm.tokens_per_image(*img.shape[-2:]) for img in images]
    return ImagePrompt(expand_placeholders(ids, IMG, counts), images, expanded=True)


def mixed_prompts(vlm) -> list[ImagePrompt]:
    """0, 1 and 2 images of different sizes per prompt; different lengths, so left padding differs."""
    a, b, c, d = image(16, 32, 1), image(32, 32, 2), image(48, 16, 3), image(32, 48, 4)
    return [
        expanded(vlm, [1, 20, START, IMG, END, 21, 22], [b]),
        expanded(vlm, [1, 30, 31, 32, 33, 34, 35, 36, 37], []),
        expanded(vlm, [1, START, IMG, END, 23, START, IMG, END, 24, 25], [c, a]),
        expanded(vlm, [1, 40, START, IMG, END], [d]),
        expanded(vlm, [1, 41, 42], []),
        expanded(vlm, [1, START, IMG, END, START, IMG, END, 26], [b, d]),
    ]


def rollout_logprobs(vlm, prompts: list[ImagePrompt], tokens: list[list[int]]) -> list[torch.Tensor]:
    """Response log-probs from the training forward, computed as RLModule does (packed rows, k15.rl.batch)."""
    rows = [p.ids + t for p, t in zip(prompts, tokens)]
    width = max(len(r) for r in rows)
    ids = torch.zeros(len(rows), width, dtype=torch.long)
    mask = torch.zeros(len(rows), width, dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, : len(r)], mask[i, : len(r)] = torch.tensor(r), 1
    with torch.no_grad():
        lp = token_logprobs(vlm, ids, mask, [img for p in prompts for img in p.images])
    return [lp[i, len(p.ids) : len(p.ids) + len(t)] for i, (p, t) in enumerate(zip(prompts, tokens))]


def test_rotations_match_hf_rotary_embedding(qwen):
    """Frequency j reads the position of its own mrope_section axis: the engine's rotations are HF's cos/sin."""
    engine = VisionRolloutEngine(qwen, 2, 64)
    prompt = engine.prepare([mixed_prompts(qwen)[5]])[0]  # a 2x2 and a 2x3 image
    positions = prompt.positions  # the model's own rope index, [3, len]
    assert positions.shape == (3, len(prompt))
    assert not torch.equal(positions[1], positions[2]) and not torch.equal(positions[0], positions[1])
    cos, sin = qwen.model.model.language_model.rotary_emb(torch.zeros(1), positions[:, None])
    half = engine.arch.head_dim // 2
    ours = engine._mrope(positions)  # [len, head_dim/2] on rope-pair-permuted rows: HF's (j, j + half) pairs
    torch.testing.assert_close(ours.real, cos[0, :, :half], rtol=0, atol=1e-6)
    torch.testing.assert_close(ours.imag, sin[0, :, :half], rtol=0, atol=1e-6)
    torch.testing.assert_close(cos[0, :, half:], cos[0, :, :half])  # HF's layout: the same angles twice
    # Images take fewer positions than tokens: decode must start after the largest position, not at the length.
    assert int(positions.max()) + 1 < len(prompt)


def test_greedy_equals_hf_generate(qwen):
    prompts = mixed_prompts(qwen)
    # max_batch_size 4: two chunks in length order, so positions must travel with their own rows
    engine = VisionRolloutEngine(qwen, max_batch_size=4, max_seq_len=64)
    out = engine.generate(prompts, SamplingParams(max_new_tokens=12, temperature=0.0, stop_token_ids=(EOS,)))
    expected = qwen.generate([p.ids for p in prompts], [p.images for p in prompts], max_new_tokens=12,
                             stop_token_ids=[EOS])
    assert out.tokens == expected
    assert len({t for row in expected for t in row}) >= 8  # not a degenerate model: many different tokens


def test_sampled_logprobs_equal_the_training_forward(qwen):
    prompts = mixed_prompts(qwen)
    engine = VisionRolloutEngine(qwen, max_batch_size=8, max_seq_len=64)
    out = engine.generate(prompts, SamplingParams(max_new_tokens=12), torch.Generator().manual_seed(0))
    assert all(len(t) == 12 for t in out.tokens)  # no stop token: every row full length
    for got, expected in zip(out.logprobs, rollout_logprobs(qwen, prompts, out.tokens)):
        torch.testing.assert_close(torch.tensor(got), expected, atol=1e-4, rtol=0)


def test_budgeted_segments_equal_one_go(qwen):
    """Partial rollouts: a continued prompt (expanded prompt + earlier tokens, same images) gets the positions
    it would have had in one go, so three segments of 4 tokens give exactly the uninterrupted 12."""
    prompts = mixed_prompts(qwen)
    engine = VisionRolloutEngine(qwen, max_batch_size=8, max_seq_len=64)
    free = engine.generate(prompts, SamplingParams(max_new_tokens=12, temperature=0.0)).tokens
    stop = next(t for t in range(12, 64) if 0 < sum(t in row[1:] for row in free) < len(free))
    params = SamplingParams(max_new_tokens=12, temperature=0.0, stop_token_ids=(stop,))
    one_go = engine.generate(prompts, params)
    assert "stop" in one_go.finish_reasons and "length" in one_go.finish_reasons

    tokens, logprobs, reasons = in_segments(engine, prompts, params, segment=4)
    assert tokens == one_go.tokens
    assert reasons == one_go.finish_reasons
    for a, b in zip(logprobs, one_go.logprobs):
        torch.testing.assert_close(torch.tensor(a), torch.tensor(b), atol=1e-4, rtol=0)

    # The same through the partial-rollout buffer (k=2): every member equals the one-go response.
    rollouts = PartialRollouts(group_size=2, groups_per_iteration=len(prompts), max_new_tokens=12, budget=5,
                               max_continuations=2)
    queue = list(range(len(prompts)))
    draw = lambda n: [queue.pop(0) for _ in range(min(n, len(queue)))]  # noqa: E731
    finished = []
    for iteration in range(3):
        finished += rollouts.run(iteration, engine, draw, lambda i: prompts[i], params, None).groups
    assert len(finished) == len(prompts) and max(len(m.segments) for g in finished for m in g.members) == 3
    for group in finished:
        for m in group.members:
            assert m.tokens == one_go.tokens[group.prompt_index]


def test_each_distinct_image_is_encoded_once(qwen):
    """k samples of a prompt (the same ImagePrompt object k times), and prompts showing the same image objects
    with other text (a continued partial rollout is one), run the tower once per distinct set of images."""
    pil = Image.fromarray(np.random.default_rng(0).integers(0, 255, (16, 48, 3), dtype=np.uint8))
    shared = image(16, 32, 1)
    prompts = [
        expanded(qwen, [1, 20, START, IMG, END, 21], [shared]),
        expanded(qwen, [1, START, IMG, END, START, IMG, END, 22], [image(32, 32, 2), image(48, 16, 3)]),
        ImagePrompt([1, START, IMG, END, 23], [pil]),  # Pillow, placeholders expanded by the engine
        ImagePrompt([1, 24, 25], []),
        expanded(qwen, [1, 26, 27, START, IMG, END], [shared]),  # the same image, other text: no second run
    ]
    k = 4
    batch = [p for p in prompts for _ in range(k)]
    encoded = []
    hook = qwen.model.model.visual.register_forward_hook(
        lambda module, args, kwargs, output: encoded.append(int(kwargs["grid_thw"].shape[0])), with_kwargs=True)
    engine = VisionRolloutEngine(qwen, max_batch_size=len(batch), max_seq_len=64)
    greedy = SamplingParams(max_new_tokens=6, temperature=0.0)
    try:
        out = engine.generate(batch, greedy)
    finally:
        hook.remove()
    assert len(encoded) == 3 and sum(encoded) == 4  # 3 distinct image sets, 4 images between them
    alone = engine.generate(prompts, greedy)
    for i in range(len(prompts)):  # and the k copies still get their own prompt's rollout
        assert out.tokens[i * k : (i + 1) * k] == [alone.tokens[i]] * k
    assert alone.tokens[0] != alone.tokens[-1]


def test_an_mrope_section_that_misses_frequencies_is_refused(qwen):
    rope = qwen.config.rope_parameters
    section = rope["mrope_section"]
    rope["mrope_section"] = [2, 2, 2]  # 6 of the 8 rotary frequencies
    try:
        with pytest.raises(ConfigError, match=r"mrope_section \[2, 2, 2\] does not cover the 8 rotary frequencies"):
            VisionRolloutEngine(qwen, 2, 64)
    finally:
        rope["mrope_section"] = section
