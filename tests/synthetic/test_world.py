import random

from k15.config import WorldConfig
from k15.synthetic.arithmetic import heldout_set, is_heldout, sample_problems
from k15.synthetic.corpus import pretrain_documents, sft_examples
from k15.synthetic.traces import long_trace, text_of


def evaluate_chain(prompt: str) -> int:
    return eval(prompt.rstrip("="))  # prompts are digits and +/- only


def test_deterministic_by_seed():
    a = sample_problems(200, "train", range(1, 7), 0.1, seed=3)
    b = sample_problems(200, "train", range(1, 7), 0.1, seed=3)
    c = sample_problems(200, "train", range(1, 7), 0.1, seed=4)
    assert a == b and a != c


def test_answers_levels_and_running_totals():
    for p in sample_problems(500, "train", range(1, 7), 0.1, seed=0):
        assert int(p.answer) == evaluate_chain(p.prompt)
        assert p.level == len(p.ops) and 1 <= p.level <= 6
        assert all(0 <= c <= 9 for _, _, _, c in p.steps())


def test_train_and_heldout_never_overlap():
    train = {p.prompt for p in sample_problems(20000, "train", range(1, 7), 0.1, seed=0)}
    held = heldout_set(range(1, 7), 64, 0.1, seed=0)
    assert held and train.isdisjoint(p.prompt for p in held)
    assert all(is_heldout(p.prompt, 0.1) for p in held)
    world = WorldConfig()
    docs = pretrain_documents(world, 5000, {"raw": 1, "short": 1, "long": 1}, seed=0)
    sft_prompts = {prompt for prompt, _ in sft_examples(world, 5000, 0.5, seed=0)}
    held_prompts = {p.prompt for p in held}
    assert held_prompts.isdisjoint(sft_prompts)
    assert not any(doc.split("=")[0] + "=" in held_prompts for doc in docs)


def test_heldout_set_is_distinct_per_level():
    held = heldout_set(range(1, 7), 64, 0.1, seed=0)
    assert len({p.prompt for p in held}) == len(held)
    for level in range(2, 7):
        assert sum(p.level == level for p in held) == 64


def test_long_trace_steps_and_masked_corrections():
    rng = random.Random(0)
    problems = sample_problems(300, "train", range(3, 7), 0.1, seed=1)
    corrections = 0
    for p in problems:
        pieces = long_trace(p, rng, error_rate=0.3)
        text = text_of(pieces)
        assert text.startswith(f"<think>{p.level}:") and text.endswith(f"</think><answer>{p.answer}</answer>")
        untrained = [piece for piece in pieces if not piece.trained]
        corrections += len(untrained)
        for piece in untrained:  # the wrong digit is never a training target, and is always corrected
            assert len(piece.text) == 1 and piece.text.isdigit()
        assert text.count(" wait ") == len(untrained)
        for a, op, b, c in p.steps():
            assert f"{a}{op}{b}={c}" in text
    assert 0.2 < corrections / sum(p.level for p in problems) < 0.4


def test_sft_long_fraction():
    examples = sft_examples(WorldConfig(), 2000, 0.25, seed=0)
    share = sum(text_of(r).startswith("<think>") for _, r in examples) / len(examples)
    assert 0.2 < share < 0.3
