"""VisionRolloutEngine: image prompts through the rollout engine agree with the VLM itself."""

from __future__ import annotations

import math

import pytest
import torch

from k15.errors import DataError
from k15.models.vlm import expand_placeholders
from k15.rollout.engine import RolloutEngine
from k15.rollout.sampling import SamplingParams
from k15.rollout.vision import ImagePrompt, VisionRolloutEngine
from k15.synthetic.images import render_text

IMG = 8  # the <image> id of the synthetic tokenizer (checked below)


def prompts_with_images(tok) -> list[ImagePrompt]:
    """Prompts of different lengths with 0-3 images of different sizes, Pillow and tensors mixed."""
    g = torch.Generator().manual_seed(1)
    px = lambda h, w: torch.randn(3, h, w, generator=g)  # noqa: E731
    ids = lambda s: tok.encode(s, add_special_tokens=False)  # noqa: E731
    bos = [tok.bos_token_id]
    return [
        ImagePrompt(bos + [IMG] + ids("=?"), [render_text("7-2+4=")]),  # Pillow 16x224 -> 8x112: 14 tokens
        ImagePrompt(bos + ids("how many? ") + [IMG] + ids(" and ") + [IMG], [px(16, 16), px(8, 24)]),
        ImagePrompt(bos + ids("no image at all, text only: 1+2="), []),
        ImagePrompt(bos + [IMG, IMG] + ids("x") + [IMG], [px(16, 32), px(8, 8), render_text("ab")]),
        ImagePrompt(bos + ids("12") + [IMG], [px(24, 16)]),
    ]


def reference_ids(vlm, prompt: ImagePrompt) -> tuple[list[int], list[torch.Tensor]]:
    """Expanded ids and pixel tensors, as the VLM's own generate/forward take them."""
    pixels = [img if isinstance(img, torch.Tensor) else vlm.image_processor()(img) for img in prompt.images]
    counts = [vlm.tokens_per_image(p.shape[-2], p.shape[-1]) for p in pixels]
    return expand_placeholders(prompt.ids, vlm.image_token_id, counts), pixels


def test_image_token_id(tok, make_vlm):
    assert make_vlm().image_token_id == IMG == tok.convert_tokens_to_ids("<image>")


@pytest.mark.parametrize("projector", ["mlp", "embedding_softmax"])
def test_greedy_matches_the_vlms_own_generate(tok, make_vlm, projector):
    vlm = make_vlm(kind=projector)
    prompts = prompts_with_images(tok)
    stops = [tok.eos_token_id]
    # max_batch_size 2: three chunks, in length order, so features must follow their own rows
    engine = VisionRolloutEngine(vlm, max_batch_size=2, max_seq_len=96)
    out = engine.generate(prompts, SamplingParams(max_new_tokens=12, temperature=0.0, stop_token_ids=stops))
    refs = [reference_ids(vlm, p) for p in prompts]
    expected = vlm.generate([ids for ids, _ in refs], [px for _, px in refs], max_new_tokens=12, stop_token_ids=stops,
                            pad_token_id=tok.pad_token_id)
    assert out.tokens == expected
    assert len({tuple(t) for t in expected}) > 1  # the images make the rows differ
    for tokens, reason in zip(out.tokens, out.finish_reasons):
        assert reason == ("stop" if tokens[-1] in stops else "length")


def test_logprobs_match_a_full_vlm_forward(tok, make_vlm):
    vlm = make_vlm(kind="embedding_softmax")
    prompts = prompts_with_images(tok)
    engine = VisionRolloutEngine(vlm, max_batch_size=8, max_seq_len=96)
    params = SamplingParams(max_new_tokens=10, temperature=0.8, top_p=0.9)
    out = engine.generate(prompts, params, torch.Generator().manual_seed(0))
    for prompt, tokens, logprobs in zip(prompts, out.tokens, out.logprobs):
        ids, pixels = reference_ids(vlm, prompt)
        full = torch.tensor([ids + tokens])
        with torch.no_grad():
            logits = vlm(full, images=pixels).logits[0].float()
        logits[:, IMG] = -torch.inf  # the engine never samples a placeholder
        lp = torch.log_softmax(logits[len(ids) - 1 : -1], dim=-1)  # T=1, no top-p: what the RL loss needs
        expected = lp.gather(-1, torch.tensor(tokens)[:, None]).squeeze(1)
        torch.testing.assert_close(torch.tensor(logprobs), expected, atol=1e-4, rtol=0)


def test_images_change_the_output_and_expanded_prompts_work(tok, make_vlm):
    vlm = make_vlm()
    engine = VisionRolloutEngine(vlm, max_batch_size=4, max_seq_len=64)
    greedy = SamplingParams(max_new_tokens=8, temperature=0.0)
    a, b = torch.randn(3, 16, 16), torch.randn(3, 16, 16)
    ids = [tok.bos_token_id, IMG, 20]
    out = engine.generate([ImagePrompt(ids, [a]), ImagePrompt(ids, [b])], greedy)
    # same text, different pixels: the features really enter the prefill (a random model's greedy
    # tokens may still agree, their log-probs do not)
    assert out.logprobs[0] != out.logprobs[1]
    expanded = expand_placeholders(ids, IMG, [4])
    again = engine.generate([ImagePrompt(expanded, [a], expanded=True)], greedy)
    assert again.tokens[0] == out.tokens[0]
    torch.testing.assert_close(torch.tensor(again.logprobs[0]), torch.tensor(out.logprobs[0]), atol=1e-5, rtol=0)


def test_the_image_token_is_never_sampled(tok, make_vlm):
    vlm = make_vlm(tied=False)
    with torch.no_grad():  # every next token equally likely: 1/60 each, <image> included
        vlm.decoder.lm_head.weight.zero_()
    texts = [[1, 20, 21, 22], [1, 30], [1, 5], [1, 40, 41]]
    params = SamplingParams(max_new_tokens=40, temperature=1.0)
    plain = RolloutEngine(vlm.decoder, 4, 64).generate(texts, params, torch.Generator().manual_seed(0))
    assert any(IMG in t for t in plain.tokens)  # the text engine does emit placeholders
    out = VisionRolloutEngine(vlm, 4, 64).generate(texts, params, torch.Generator().manual_seed(0))
    assert all(len(t) == 40 and IMG not in t for t in out.tokens)
    vocab = vlm.config.vocab_size
    torch.testing.assert_close(torch.tensor(out.logprobs), torch.full((4, 40), -math.log(vocab - 1)))


def test_text_prompts_match_the_text_engine(tok, make_vlm):
    vlm = make_vlm()
    texts = [[1, 20, 21, 22], [1, 30], [1, 17, 12, 18, 13, 19, 14]]
    params = SamplingParams(max_new_tokens=8, temperature=0.0)  # greedy: the same path unless <image> wins
    vision = VisionRolloutEngine(vlm, 2, 64).generate(texts, params, torch.Generator().manual_seed(3))
    text = RolloutEngine(vlm.decoder, 2, 64).generate(texts, params, torch.Generator().manual_seed(3))
    assert vision.tokens == text.tokens
    # the same distribution renormalised without <image>: each log-prob is a little higher
    gap = torch.tensor(vision.logprobs) - torch.tensor(text.logprobs)
    assert bool((gap > 0).all()) and float(gap.max()) < 0.1


def test_load_weights_takes_the_vlm(tok, make_vlm):
    vlm = make_vlm()
    engine = VisionRolloutEngine(vlm, 2, 64)
    with torch.no_grad():
        vlm.decoder.model.norm.weight.mul_(3.0)
    assert not torch.equal(engine.final_norm, vlm.decoder.model.norm.weight)
    engine.load_weights(vlm)
    assert torch.equal(engine.final_norm, vlm.decoder.model.norm.weight)


def test_placeholder_image_mismatch_is_a_clear_data_error(tok, make_vlm):
    vlm = make_vlm()
    engine = VisionRolloutEngine(vlm, 2, 64)
    params = SamplingParams(max_new_tokens=4, temperature=0.0)
    good = ImagePrompt([1, IMG, 20], [torch.randn(3, 16, 16)])
    two_placeholders_one_image = ImagePrompt([1, IMG, 20, IMG], [torch.randn(3, 16, 16)])
    with pytest.raises(DataError, match=r"prompt 1: the text has 2 '<image>' placeholders but 1 images were given"):
        engine.generate([good, two_placeholders_one_image], params)
    short_run = ImagePrompt([1, IMG, IMG, IMG, 20], [torch.randn(3, 16, 16)], expanded=True)  # needs 4
    with pytest.raises(DataError, match=r"prompt 0: .*3 '<image>' placeholder tokens in the input but 1 images give 4"):
        engine.generate([short_run], params)


def test_limits_and_history_pass_through(tok, make_vlm):
    """Partial rollouts: a row's own token limit, and a continued (expanded) prompt with earlier output."""
    vlm = make_vlm()
    engine = VisionRolloutEngine(vlm, 4, 64)
    pixels = torch.randn(3, 16, 16)
    params = SamplingParams(max_new_tokens=6, temperature=0.0)
    prompt = ImagePrompt([1, IMG, 20], [pixels])
    whole = engine.generate([prompt, prompt], params, limits=[6, 2])
    assert [len(t) for t in whole.tokens] == [6, 2] and whole.finish_reasons == ["length", "length"]
    # continue row 1 from its 2 tokens: the result is the rest of the one-go response
    continued = ImagePrompt(expand_placeholders(prompt.ids, IMG, [4]) + whole.tokens[1], [pixels], expanded=True)
    rest = engine.generate([continued], params, limits=[4], history=[2])
    assert whole.tokens[1] + rest.tokens[0] == whole.tokens[0]


@pytest.mark.parametrize("merge", [1, 2])  # exported as LLaVA (Pixtral tower) and as Mistral3 (2x2 merge)
def test_hf_llava_and_mistral3_wrappers_roll_out_exactly(tok, make_vlm, merge):
    from k15.models.hf_vlm import HFVisionLanguageModel
    from k15.models.vlm import to_transformers

    ours = make_vlm(merge=merge)
    hf = HFVisionLanguageModel(to_transformers(ours)).eval()
    g = torch.Generator().manual_seed(2)
    px = lambda h, w: torch.randn(3, h, w, generator=g)  # noqa: E731
    prompts = [ImagePrompt([1, IMG, 20, 21], [px(16, 32)]),
               ImagePrompt([1, 30, IMG, IMG, 31], [px(32, 16), px(16, 16)]),
               ImagePrompt([1, 22, 23], [])]
    engine = VisionRolloutEngine(hf, max_batch_size=2, max_seq_len=64)
    greedy = SamplingParams(max_new_tokens=8, temperature=0.0, stop_token_ids=[tok.eos_token_id])
    out = engine.generate(prompts, greedy)
    refs = [expand_placeholders(p.ids, IMG, [hf.tokens_per_image(*i.shape[-2:]) for i in p.images]) for p in prompts]
    expected = hf.generate(refs, [p.images for p in prompts], max_new_tokens=8, stop_token_ids=[tok.eos_token_id],
                           pad_token_id=tok.pad_token_id)
    assert out.tokens == expected
    # and the same rollout as our own model gives (the export is exact)
    assert out.tokens == VisionRolloutEngine(ours, 2, 64).generate(prompts, greedy).tokens
    sampled = engine.generate(prompts, SamplingParams(max_new_tokens=8), torch.Generator().manual_seed(0))
    for prompt, ids, tokens, logprobs in zip(prompts, refs, sampled.tokens, sampled.logprobs):
        with torch.no_grad():
            logits = hf(torch.tensor([ids + tokens]), images=prompt.images).logits[0].float()
        logits[:, IMG] = -torch.inf
        lp = torch.log_softmax(logits[len(ids) - 1 : -1], dim=-1).gather(-1, torch.tensor(tokens)[:, None]).squeeze(1)
        torch.testing.assert_close(torch.tensor(logprobs), lp, atol=1e-4, rtol=0)
