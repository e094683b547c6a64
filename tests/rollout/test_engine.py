"""RolloutEngine: exact agreement with HF (greedy tokens, log-probs), seeding, batching, weight sync."""

from __future__ import annotations

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedModel, Qwen2Config, Qwen2ForCausalLM

from k15.rollout.engine import RolloutEngine, RolloutOutput
from k15.rollout.sampling import SamplingParams, sample_next

VOCAB = 48
SIZES = dict(
    vocab_size=VOCAB,
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=128,
    # A wide init makes the random model's greedy path varied instead of one repeated token.
    initializer_range=0.2,
)
# Different lengths, so chunks are left-padded; 7 prompts with max_batch_size=3 gives 3 chunks.
PROMPTS = [[3, 4, 5], [7, 8, 9, 10, 11, 12, 13], [20], [30, 31, 32, 33], [1, 2, 3, 4, 5, 6], [40, 41], [9] * 9]


def make_model(kind: str, seed: int = 0) -> PreTrainedModel:
    torch.manual_seed(seed)
    if kind == "llama":  # untied, no biases, non-default rope_theta (must be read from the config)
        model = LlamaForCausalLM(LlamaConfig(**SIZES, rope_theta=500.0))
    elif kind == "llama_scaled_rope":  # a rope type other than "default" (frequencies from HF's table)
        rope = {"rope_type": "linear", "factor": 2.0, "rope_theta": 1000.0}
        model = LlamaForCausalLM(LlamaConfig(**SIZES, rope_parameters=rope))
    elif kind == "llama_bias":  # q/k/v/o and MLP biases
        model = LlamaForCausalLM(LlamaConfig(**SIZES, attention_bias=True, mlp_bias=True))
    elif kind == "qwen2_tied":  # q/k/v biases, tied embeddings
        model = Qwen2ForCausalLM(Qwen2Config(**SIZES, tie_word_embeddings=True, rope_theta=1e6))
    elif kind == "qwen2":
        model = Qwen2ForCausalLM(Qwen2Config(**SIZES, tie_word_embeddings=False))
    else:
        raise ValueError(kind)
    if kind not in ("llama", "llama_scaled_rope"):
        with torch.no_grad():  # HF initialises biases to zero; make them matter
            for name, p in model.named_parameters():
                if name.endswith(".bias"):
                    p.normal_(0.0, 0.2)
    model.generation_config.eos_token_id = None
    model.generation_config.bos_token_id = None
    return model.eval()


MODELS = ["llama", "llama_scaled_rope", "llama_bias", "qwen2_tied", "qwen2"]


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """These models are tiny: a second thread buys nothing and thrashes when the cores are shared."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def hf_greedy(model: PreTrainedModel, prompt: list[int], max_new: int, stop: tuple[int, ...] = ()) -> list[int]:
    """HF's own greedy continuation of one unpadded prompt (stops after a stop token, like ours)."""
    out = model.generate(
        torch.tensor([prompt]),
        attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
        do_sample=False,
        max_new_tokens=max_new,
        eos_token_id=list(stop) or None,
        pad_token_id=0,
    )
    return out[0, len(prompt) :].tolist()


def hf_logprobs(model: PreTrainedModel, prompt: list[int], generated: list[int]) -> torch.Tensor:
    """log p(generated[i]) from one full HF forward pass over prompt + generated."""
    seq = torch.tensor([prompt + generated])
    with torch.no_grad():
        logits = model(seq).logits[0].float()
    predicting = logits[len(prompt) - 1 : len(prompt) + len(generated) - 1]
    return torch.log_softmax(predicting, -1).gather(-1, torch.tensor(generated)[:, None]).squeeze(-1)


def pick_stop_token(continuations: list[list[int]]) -> int:
    """A token that ends some continuations early (after >= 1 token) but never appears in others."""
    best, best_score = None, None
    for tok in range(VOCAB):
        hits = [tok in c[1:] for c in continuations]
        if 0 < sum(hits) < len(hits):
            score = abs(sum(hits) - 0.6 * len(hits))  # prefer ~60% stopping: exercises compaction
            if best_score is None or score < best_score:
                best, best_score = tok, score
    assert best is not None
    return best


def check_finish_reasons(out: RolloutOutput, params: SamplingParams) -> None:
    for toks, lps, reason in zip(out.tokens, out.logprobs, out.finish_reasons):
        assert len(toks) == len(lps)
        assert not any(t in params.stop_token_ids for t in toks[:-1])
        if reason == "stop":
            assert toks[-1] in params.stop_token_ids
        else:
            assert reason == "length"
            assert len(toks) == params.max_new_tokens and toks[-1] not in params.stop_token_ids


@pytest.mark.parametrize("kind", MODELS)
def test_greedy_matches_hf_generate(kind: str) -> None:
    model = make_model(kind)
    max_new = 20
    free = [hf_greedy(model, p, max_new) for p in PROMPTS]
    assert sum(len(set(c)) > 3 for c in free) >= 5, "random model's greedy path is degenerate"
    stop = (pick_stop_token(free),)
    expected = [hf_greedy(model, p, max_new, stop) for p in PROMPTS]

    engine = RolloutEngine(model, max_batch_size=3, max_seq_len=40)
    compactions = []
    original = engine._compact
    engine._compact = lambda keep, filled: (compactions.append(keep.numel()), original(keep, filled))[-1]
    params = SamplingParams(max_new_tokens=max_new, temperature=0.0, stop_token_ids=stop)
    out = engine.generate(PROMPTS, params)

    assert out.tokens == expected
    reasons = ["stop" if len(e) < max_new or e[-1] in stop else "length" for e in expected]
    assert out.finish_reasons == reasons
    assert "stop" in reasons and "length" in reasons  # the test covers both ways of finishing
    check_finish_reasons(out, params)
    # Without stop tokens every row runs to the length limit; chunking must not change results.
    assert engine.generate(PROMPTS, SamplingParams(max_new_tokens=max_new, temperature=0.0)).tokens == free
    one_batch = RolloutEngine(model, max_batch_size=len(PROMPTS), max_seq_len=40)
    assert one_batch.generate(PROMPTS, params).tokens == expected
    if kind == "llama":
        assert compactions, "expected some chunk to drop finished rows"


@pytest.mark.parametrize("compact_below", [0.0, 0.5, 1.0])
def test_when_rows_are_compacted_never_changes_greedy_output(compact_below: float) -> None:
    """compact_below is a speed knob (benchmarks/rollout_variants.py): never, at half, at every finish."""
    model = make_model("llama")
    free = [hf_greedy(model, p, 20) for p in PROMPTS]
    params = SamplingParams(max_new_tokens=20, temperature=0.0, stop_token_ids=(pick_stop_token(free),))
    expected = RolloutEngine(model, max_batch_size=len(PROMPTS), max_seq_len=40).generate(PROMPTS, params)
    engine = RolloutEngine(model, max_batch_size=len(PROMPTS), max_seq_len=40)
    engine.compact_below = compact_below
    out = engine.generate(PROMPTS, params)
    assert out.tokens == expected.tokens and out.finish_reasons == expected.finish_reasons
    assert torch.allclose(torch.tensor(sum(out.logprobs, [])), torch.tensor(sum(expected.logprobs, [])), atol=1e-5)


@pytest.mark.parametrize("kind", ["llama", "qwen2_tied"])
@pytest.mark.parametrize("temperature,top_p", [(1.0, 1.0), (0.7, 0.9)])
def test_logprobs_match_full_forward(kind: str, temperature: float, top_p: float) -> None:
    model = make_model(kind)
    engine = RolloutEngine(model, max_batch_size=4, max_seq_len=48)
    params = SamplingParams(max_new_tokens=16, temperature=temperature, top_p=top_p, stop_token_ids=(5, 6))
    out = engine.generate(PROMPTS, params, generator=torch.Generator().manual_seed(1))
    check_finish_reasons(out, params)
    for prompt, toks, lps in zip(PROMPTS, out.tokens, out.logprobs):
        torch.testing.assert_close(torch.tensor(lps), hf_logprobs(model, prompt, toks), atol=1e-4, rtol=0)


def test_same_seed_same_samples() -> None:
    model = make_model("qwen2")
    engine = RolloutEngine(model, max_batch_size=3, max_seq_len=64)
    params = SamplingParams(max_new_tokens=24, temperature=1.0, top_p=0.95, stop_token_ids=(7,))
    prompts = PROMPTS + PROMPTS[:2]  # 9 prompts, 3 chunks of 3
    a = engine.generate(prompts, params, generator=torch.Generator().manual_seed(123))
    b = engine.generate(prompts, params, generator=torch.Generator().manual_seed(123))
    c = engine.generate(prompts, params, generator=torch.Generator().manual_seed(124))
    assert a == b
    assert a.tokens != c.tokens
    assert len(a.tokens) == len(prompts)
    check_finish_reasons(a, params)
    assert set(a.finish_reasons) == {"stop", "length"}


def test_load_weights_syncs_only_when_called() -> None:
    model = make_model("llama")
    engine = RolloutEngine(model, max_batch_size=4, max_seq_len=40)
    params = SamplingParams(max_new_tokens=12, temperature=0.0)
    before = [hf_greedy(model, p, 12) for p in PROMPTS]
    assert engine.generate(PROMPTS, params).tokens == before

    with torch.no_grad():  # a "training step" on the HF model
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.2)
    after = [hf_greedy(model, p, 12) for p in PROMPTS]
    assert after != before
    assert engine.generate(PROMPTS, params).tokens == before  # engine still has its own copy

    seconds = engine.load_weights(model)
    assert isinstance(seconds, float) and seconds >= 0.0
    assert engine.generate(PROMPTS, params).tokens == after


def test_top_p_never_samples_outside_the_nucleus() -> None:
    probs = torch.tensor([0.5, 0.3, 0.15, 0.05])
    logits = probs.log().expand(4000, 4)
    gen = torch.Generator().manual_seed(0)
    tokens, logprobs = sample_next(logits, SamplingParams(max_new_tokens=1, top_p=0.7), gen)
    counts = torch.bincount(tokens, minlength=4)
    assert counts[2] == 0 and counts[3] == 0  # 0.5 + 0.3 >= 0.7: tokens 2 and 3 are cut
    assert abs(counts[0] / 4000 - 0.5 / 0.8) < 0.03  # renormalised within the nucleus
    torch.testing.assert_close(logprobs, probs.log()[tokens])  # log-probs are untempered, unfiltered

    greedy, _ = sample_next(logits[:3], SamplingParams(max_new_tokens=1, temperature=0.0))
    assert greedy.tolist() == [0, 0, 0]
    cold, _ = sample_next(logits[:100], SamplingParams(max_new_tokens=1, temperature=0.05), gen)
    assert (cold == 0).float().mean() > 0.99  # low temperature concentrates on the mode


def test_rejects_sequences_longer_than_the_cache() -> None:
    engine = RolloutEngine(make_model("llama"), max_batch_size=2, max_seq_len=16)
    with pytest.raises(ValueError, match="max_seq_len"):
        engine.generate([[1] * 10], SamplingParams(max_new_tokens=7))
    out = engine.generate([[1] * 10, [2]], SamplingParams(max_new_tokens=6, temperature=0.0))
    assert [len(t) for t in out.tokens] == [6, 6]
    assert engine.generate([[1, 2]], SamplingParams(max_new_tokens=0)).tokens == [[]]


def test_a_sliding_window_is_refused_beyond_the_window_and_exact_within_it() -> None:
    """Mistral attends within config.sliding_window; the engine attends to everything: the same within
    the window (greedy equals generate), refused in one line where the two would differ."""
    from transformers import MistralConfig, MistralForCausalLM

    torch.manual_seed(0)
    model = MistralForCausalLM(MistralConfig(**SIZES, sliding_window=24)).eval()
    model.generation_config.eos_token_id = None
    with pytest.raises(NotImplementedError, match="sliding window of 24 tokens .* up to 32 tokens"):
        RolloutEngine(model, max_batch_size=2, max_seq_len=32)
    engine = RolloutEngine(model, max_batch_size=2, max_seq_len=24)
    prompts = [[3, 4, 5], [7, 8, 9, 10, 11, 12, 13]]
    out = engine.generate(prompts, SamplingParams(max_new_tokens=12, temperature=0.0))
    assert out.tokens == [hf_greedy(model, p, 12) for p in prompts]
    # Qwen2's sliding_window is off unless use_sliding_window: no refusal
    RolloutEngine(make_model("qwen2"), max_batch_size=2, max_seq_len=64)
