"""The VLM evaluation (k15.eval.vision) against hand-computed cases: pass@1 and pass@k per task and level.

The model is a real tiny VLM (its image processor and token counts are used); the rollout engine is
replaced by a script of answers, so every number below is known in advance.
"""

from __future__ import annotations

import pytest
import torch

import k15.eval.vision as vision_module
from k15.config import EvalConfig, ModelConfig, WorldConfig
from k15.data.vision_prompts import doc_prompt
from k15.errors import DataError
from k15.eval.vision import evaluate_vision, heldout_docs
from k15.models.projector import ProjectorConfig
from k15.models.vision import VisionConfig
from k15.models.vlm import build_vlm
from k15.rollout.vision import ImagePrompt
from k15.tokenizer import build_synthetic_tokenizer, encode, prompt_ids

pytestmark = pytest.mark.usefixtures("one_thread")

TOK = build_synthetic_tokenizer()
WORLD = WorldConfig(max_level=3)
CFG = EvalConfig(problems_per_level=2, samples_per_problem=2, pass_k=[1, 2], max_new_tokens=8)


@pytest.fixture(scope="module")
def vlm():
    torch.manual_seed(0)
    text = ModelConfig(hidden_size=32, num_layers=1, num_heads=2, num_kv_heads=2, intermediate_size=64, max_seq_len=256)
    vision = VisionConfig(patch_size=8, hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64, max_side=112,
                          max_pixels=4096)
    return build_vlm(text, TOK, vision, ProjectorConfig())


class ScriptedEngine:
    """Stands in for VisionRolloutEngine: answers every prompt from `script[task]`, in order, and keeps the prompts."""

    script: dict[str, list[str]] = {}
    seen: list[list[ImagePrompt]] = []

    def __init__(self, vlm, max_batch_size, max_seq_len):
        pass

    def generate(self, prompts, params, generator=None):  # the tasks come in the script's order
        ScriptedEngine.seen.append(list(prompts))
        texts = self.script[list(self.script)[len(ScriptedEngine.seen) - 1]]
        assert len(texts) == len(prompts)
        return type("Out", (), {"tokens": [encode(TOK, t) for t in texts]})()


def scripted(docs, right: list[tuple[bool, bool]], think: set[int] = frozenset()) -> list[str]:
    """Two responses per document: its answer (right) or a wrong one; `think` marks documents answered in long CoT."""
    out = []
    for i, (doc, marks) in enumerate(zip(docs, right, strict=True)):
        for ok in marks:
            answer = doc.answer if ok else str((int(doc.answer) + 1) % 10)
            out.append(("<think>1:x</think>" if i in think else "") + f"<answer>{answer}</answer>")
    return out


def test_pass_at_1_and_k_per_task_and_level_by_hand(vlm, monkeypatch):
    problem, count = heldout_docs("problem", WORLD, 2), heldout_docs("count", WORLD, 2)
    assert [d.level for d in problem] == [1, 1, 2, 2, 3, 3]  # two held-out problems per level
    levels = sorted({d.level for d in count})
    # problem: level 1 right 2/2 and 1/2, level 2 0/2 and 2/2, level 3 1/2 and 0/2
    problem_marks = [(True, True), (True, False), (False, False), (True, True), (False, True), (False, False)]
    count_marks = [(True, False)] * len(count)  # every document half right
    monkeypatch.setattr(ScriptedEngine, "script", {"problem": scripted(problem, problem_marks, think={0, 1}),
                                                   "count": scripted(count, count_marks)})
    monkeypatch.setattr(ScriptedEngine, "seen", [])
    monkeypatch.setattr(vision_module, "VisionRolloutEngine", ScriptedEngine)

    vlm.train()
    results = evaluate_vision(vlm, TOK, WORLD, CFG, ["problem", "count"], seed=0)
    assert vlm.training  # the mode it came in with, after sampling in eval mode

    p = results["problem"]
    assert {lvl: r.pass_at_1 for lvl, r in p.levels.items()} == {1: 0.75, 2: 0.5, 3: 0.25}
    assert {lvl: r.pass_at_k[2] for lvl, r in p.levels.items()} == {1: 1.0, 2: 0.5, 3: 0.5}
    assert {lvl: r.long_share for lvl, r in p.levels.items()} == {1: 1.0, 2: 0.0, 3: 0.0}
    assert all(r.samples == 4 and r.problems == 2 for r in p.levels.values())
    assert p.pass_at_1 == pytest.approx(0.5) and p.pass_at_k(2) == pytest.approx(2 / 3)  # each level weighs the same

    c = results["count"]
    assert sorted(c.levels) == levels and all(r.pass_at_1 == 0.5 and r.pass_at_k[2] == 1.0 for r in c.levels.values())

    # one prompt per document, its image processed, shared by the document's samples
    problem_prompts, count_prompts = ScriptedEngine.seen
    assert len(problem_prompts) == 12 and len(count_prompts) == 2 * len(count)
    for i, doc in enumerate(problem):
        first, second = problem_prompts[2 * i], problem_prompts[2 * i + 1]
        assert first is second and first.ids == prompt_ids(TOK, doc_prompt(doc))
        assert len(first.images) == 1 and isinstance(first.images[0], torch.Tensor)
    # the logged examples show the image's place, the problem and the expected answer
    assert p.examples[0].startswith(f"[ok] [image] {problem[0].meta['prompt']} -> ")
    assert p.examples[0].endswith(f"(answer {problem[0].answer})")


def test_a_prompt_longer_than_the_context_is_refused_naming_the_task(vlm, monkeypatch):
    monkeypatch.setattr(vision_module, "VisionRolloutEngine", ScriptedEngine)
    too_long = EvalConfig(problems_per_level=1, samples_per_problem=1, max_new_tokens=vlm.config.max_position_embeddings)
    with pytest.raises(DataError, match="eval of 'count'"):
        evaluate_vision(vlm, TOK, WORLD, too_long, ["count"], seed=0)
