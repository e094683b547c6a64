"""Labelled RM data: deterministic, labelled by the checker, balanced as configured, spot check held out."""

from collections import Counter

import pytest

from k15.errors import DataError
from k15.reward_models.config import RMDataConfig
from k15.reward_models.data import (JudgeExample, build_examples, final_answer, judge_prompt, read_examples,
                                    rollout_examples, write_examples)
from k15.synthetic.arithmetic import is_heldout
from k15.synthetic.freeform import rationale, sample_freeform, truth
from k15.tokenizer import build_synthetic_tokenizer, unencodable_characters

CFG = RMDataConfig(positive_share=0.3)


def chain(question: str) -> str:
    return question.split(" ")[0]  # "7-2+4-1= how many apples?" -> the chain, which decides the split


def test_deterministic_by_seed():
    a = build_examples(300, "train", CFG, 0.1, seed=1)
    assert a == build_examples(300, "train", CFG, 0.1, seed=1)
    assert a != build_examples(300, "train", CFG, 0.1, seed=2)


def test_labels_are_the_checkers_and_rationales_are_the_generators():
    for ex in build_examples(400, "train", CFG, 0.1, seed=0):
        assert ex.label == truth(ex.reference, ex.response)
        assert ex.rationale == rationale(ex.reference, ex.response)
        assert ex.source == "rewrite" and ex.form


@pytest.mark.parametrize("share", [0.0, 0.3, 0.5, 1.0])
def test_positive_share_is_exact(share):
    examples = build_examples(101, "train", RMDataConfig(positive_share=share), 0.1, seed=0)
    assert len(examples) == 101 and sum(ex.label for ex in examples) == round(101 * share)


def test_spot_check_questions_are_held_out():
    spot = build_examples(300, "heldout", CFG, 0.1, seed=0)
    train = build_examples(300, "train", CFG, 0.1, seed=0)
    assert all(is_heldout(chain(ex.question), 0.1) for ex in spot)
    assert not any(is_heldout(chain(ex.question), 0.1) for ex in train)


def test_judge_prompts_are_encodable():
    tok = build_synthetic_tokenizer()
    text = " ".join(judge_prompt(ex) + ex.rationale for ex in build_examples(300, "train", CFG, 0.1, seed=3))
    assert not unencodable_characters(tok, text)


def test_final_answer():
    assert final_answer("<think>1:3+5=8</think><answer>eight</answer>") == "eight"
    assert final_answer("so the answer is 8.") == "so the answer is 8."
    assert final_answer("<think>3+5=8</think> it is 8") == "it is 8"
    assert final_answer("<answer>7</answer><answer>8</answer>") == "7 8"  # two answers state no value
    assert not truth("8", final_answer("<answer>7</answer><answer>8</answer>"))
    assert final_answer("") == ""


def test_rollouts_are_labelled_by_the_checker_and_fill_their_share(tiny_lm):
    model, tok = tiny_lm
    questions = sample_freeform(6, "train", range(1, 3), 0.1, seed=0)
    rollouts = rollout_examples(model, tok, questions, 2, 1.0, 8, seed=0)
    assert len(rollouts) == 12 and all(ex.source == "rollout" for ex in rollouts)
    assert all(ex.label == truth(ex.reference, ex.response) for ex in rollouts)
    assert rollouts == rollout_examples(model, tok, questions, 2, 1.0, 8, seed=0)
    # Give the builder known rollouts: it takes them up to their share, within each label's quota.
    fake = [JudgeExample(q.question, q.reference, r, truth(q.reference, r), rationale(q.reference, r), "rollout",
                         "rollout") for q in questions for r in (q.problem.answer, "banana")]
    cfg = RMDataConfig(positive_share=0.5, rollout_share=0.5)
    built = build_examples(10, "train", cfg, 0.1, seed=0, rollouts=fake)
    sources = Counter((ex.source, ex.label) for ex in built)
    assert sources[("rollout", True)] + sources[("rollout", False)] == 5
    assert sum(ex.label for ex in built) == 5


def test_jsonl_round_trip_and_bad_rows(tmp_path):
    examples = build_examples(20, "train", CFG, 0.1, seed=0)
    path = write_examples(tmp_path / "d" / "train.jsonl", examples)
    assert read_examples(path) == examples
    path.write_text(path.read_text().splitlines()[0] + '\n{"question": "1+1="}\n')
    with pytest.raises(DataError, match=r"train.jsonl:2:.*missing"):
        read_examples(path)
    with pytest.raises(DataError, match="rm_data"):
        read_examples(tmp_path / "none.jsonl")
