"""RL on image prompts: log-probs, partial rollouts and an RL iteration with a VLM policy."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from k15.config import RLConfig
from k15.data.prompts import read_prompt_set
from k15.data.vision_prompts import image_prompt, write_vision_prompt_set
from k15.errors import DataError
from k15.modules.rl import RLModule
from k15.rl.batch import token_logprobs
from k15.rollout.partial import PartialRollouts
from k15.rollout.sampling import SamplingParams
from k15.rollout.vision import ImagePrompt, VisionRolloutEngine


@pytest.fixture(scope="module")
def prompt_set(tmp_path_factory):
    out = tmp_path_factory.mktemp("vision_prompts")
    return write_vision_prompt_set(out, ["problem", "count", "chart"], n=9, seed=0)


def test_prompt_set_round_trip_resolves_images(prompt_set):
    kinds = [r.extra["kind"] for r in prompt_set]
    assert kinds[:3] == ["problem", "count", "chart"] and len(prompt_set) == 9
    for r in prompt_set:
        assert r.prompt.startswith("<image>") and len(r.images) == 1
        assert r.difficulty >= 1 and r.answer
    # the JSONL holds paths relative to itself; read back they point at the rendered files
    again = read_prompt_set(prompt_set[0].images[0].rsplit("/images/", 1)[0] + "/prompts.jsonl")
    assert again == prompt_set


def test_token_logprobs_with_images_equal_each_sequence_alone(tok, make_vlm, prompt_set):
    vlm = make_vlm(kind="embedding_softmax")
    prompts = [image_prompt(r, tok, vlm) for r in prompt_set[:4]]
    responses = [[20, 21, 22], [23], [24, 25], [26, 27, 28, 29]]
    seqs = [p.ids + r for p, r in zip(prompts, responses)]
    width = max(map(len, seqs))
    ids = torch.full((len(seqs), width), tok.pad_token_id)
    attention = torch.zeros_like(ids)
    for i, s in enumerate(seqs):
        ids[i, : len(s)], attention[i, : len(s)] = torch.tensor(s), 1
    images = [img for p in prompts for img in p.images]
    packed = token_logprobs(vlm, ids, attention, images)
    assert torch.isfinite(packed).all()  # placeholder positions are 0, not -inf
    for i, (p, s) in enumerate(zip(prompts, seqs)):
        logits = vlm(torch.tensor([s]), images=p.images).logits[0].float()
        logits[:, vlm.image_token_id] = -torch.inf  # as the engine samples
        alone = F.log_softmax(logits[:-1], -1).gather(1, torch.tensor(s[1:])[:, None]).squeeze(1)
        start = len(p.ids)  # response positions
        torch.testing.assert_close(packed[i, start : len(s)], alone[start - 1 :], atol=1e-5, rtol=0)


def test_partial_rollouts_carry_images_and_equal_one_go(tok, make_vlm, prompt_set):
    vlm = make_vlm(kind="embedding_softmax")
    prompts = [image_prompt(r, tok, vlm) for r in prompt_set[:4]]
    engine = VisionRolloutEngine(vlm, max_batch_size=8, max_seq_len=128)
    params = SamplingParams(max_new_tokens=12, temperature=0.0)
    one_go = engine.generate(prompts, params)
    rollouts = PartialRollouts(group_size=2, groups_per_iteration=4, max_new_tokens=12, budget=4, max_continuations=5)
    queue = list(range(4))
    draw = lambda n: [queue.pop(0) for _ in range(min(n, len(queue)))]  # noqa: E731
    finished = []
    for iteration in range(4):
        finished += rollouts.run(iteration, engine, draw, lambda i: prompts[i], params, None).groups
    assert len(finished) == 4 and max(len(m.segments) for g in finished for m in g.members) == 3
    for g in finished:
        for m in g.members:  # a continued segment saw the same image: greedy equals one go
            assert m.tokens == one_go.tokens[g.prompt_index]
    assert isinstance(prompts[0] + [5], ImagePrompt) and (prompts[0] + [5]).ids[-1] == 5


def rl_module(vlm, tok, records, **overrides) -> RLModule:
    cfg = RLConfig(prompts_per_iteration=3, samples_per_prompt=4, max_new_tokens=24, epochs=1, lr=1e-3, **overrides)
    module = RLModule(vlm, tok, records, cfg, max_seq_len=128, seed=0)
    module.on_fit_start()
    module.log = lambda *a, **k: None  # no trainer attached
    return module


def test_an_rl_iteration_on_image_prompts_trains_the_vlm(tok, make_vlm, prompt_set):
    vlm = make_vlm(kind="embedding_softmax").train()
    module = rl_module(vlm, tok, prompt_set, minibatches=2)  # shuffled rows, split: images must follow their rows
    logged = {}
    module.log_iteration = lambda metrics, rollout, rewards: logged.update(metrics)
    module.manual_backward = lambda loss: loss.backward()

    def alternating(rollout):  # an untrained model earns nothing: give half of each group a reward
        correct = torch.arange(len(rollout.samples)) % 2 == 0
        return correct.float(), correct

    module.score = alternating
    before = {k: v.clone() for k, v in vlm.state_dict().items()}
    module.training_step(None, 0)
    assert module.iteration == 1
    batch = module.to_batch(module.rollouts.buffer.groups) if module.rollouts.buffer.groups else None
    assert batch is None  # budget off: every group finished and was trained on
    changed = {k.split(".")[0] for k, v in vlm.state_dict().items() if not torch.equal(v, before[k])}
    assert {"decoder", "tower", "projector"} <= changed  # the gradient reached the tower through the images
    # the reference pass (before any step) over the shuffled rows reproduces the engine's log-probs
    assert logged["rl/logp_mismatch"] < 1e-4


def test_rollout_logprobs_match_the_training_forward(tok, make_vlm, prompt_set):
    vlm = make_vlm(kind="embedding_softmax").train()
    module = rl_module(vlm, tok, prompt_set)
    module.engine.load_weights(vlm)
    done = module.rollouts.run(0, module.engine, lambda n: module.sampler.draw(n, 0), module.prompt_tokens,
                               module.sampling_params(), module.generator)
    rollout = module.to_batch(done.groups)
    assert all(len(s.images) == 1 for s in rollout.samples)
    ids, attention, _ = rollout.tensors()
    with torch.no_grad():
        lp = token_logprobs(vlm, ids, attention, rollout.images_of(list(range(len(rollout.samples)))))
    assert rollout.logprob_mismatch(lp) < 1e-4


def test_a_text_policy_refuses_image_prompts(tok, prompt_set):
    from transformers import LlamaConfig, LlamaForCausalLM

    text = LlamaForCausalLM(LlamaConfig(vocab_size=len(tok), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                        intermediate_size=32))
    with pytest.raises(DataError, match="has images, but the policy is a text model"):
        RLModule(text, tok, prompt_set, RLConfig(), max_seq_len=64, seed=0)
