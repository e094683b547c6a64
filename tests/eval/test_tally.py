"""What `tally` reports besides pass@k, against hand-computed cases: the long-CoT share, tokens per answer and
how the overall numbers weigh the levels, the logged examples; and the prompts watched during training."""

import pytest

from k15.config import WorldConfig
from k15.eval.evaluate import EvalItem, sample_problems_for_logging, tally
from k15.synthetic.arithmetic import is_heldout
from k15.tokenizer import build_synthetic_tokenizer, encode

TOK = build_synthetic_tokenizer()

LONG = "<think>1:2+3=5</think><answer>5</answer>"


def test_long_share_counts_answers_that_think_first_right_or_wrong():
    items = [EvalItem(1, "a", "5", "2+3="), EvalItem(1, "a", "5", "2+3="), EvalItem(1, "a", "5", "2+3="),
             EvalItem(2, "b", "6", "3+3="), EvalItem(2, "b", "6", "3+3=")]
    texts = [LONG, "<answer>5</answer>", "<answer>5</answer>",
             "<think>1:3+3=7</think><answer>7</answer>", "<think>1:3+3=6</think><answer>6</answer>"]
    result = tally(items, [encode(TOK, t) for t in texts], TOK)
    assert result.levels[1].long_share == pytest.approx(1 / 3)
    assert result.levels[2].long_share == 1.0  # the wrong long answer counts as long too
    assert result.levels[2].pass_at_1 == 0.5
    # the run's overall share (results table, tools/findings.py) is per answer: 3 of 5
    levels = result.to_dict()["levels"]
    overall = sum(lv["long_share"] * lv["samples"] for lv in levels.values()) / sum(lv["samples"] for lv in levels.values())
    assert overall == pytest.approx(3 / 5, abs=1e-4)


def test_mean_tokens_is_per_answer_while_pass_at_1_is_per_level():
    # level 1: one long answer, right; level 2: three short answers, wrong
    items = [EvalItem(1, "a", "0", "")] + [EvalItem(2, "b", "9", "")] * 3
    responses = [encode(TOK, "<think>1:5-5=0</think><answer>0</answer>")] + [encode(TOK, "<answer>1</answer>")] * 3
    long, short = len(responses[0]), len(responses[1])
    assert long > short
    result = tally(items, responses, TOK)
    assert result.levels[1].mean_tokens == long and result.levels[2].mean_tokens == short
    assert result.mean_tokens == pytest.approx((long + 3 * short) / 4)  # over answers, not (long + short) / 2
    assert result.pass_at_1 == pytest.approx(0.5)  # over levels (each weighs the same), not 1/4 over answers
    micro = tally(items, responses, TOK, macro=False)
    assert micro.pass_at_1 == pytest.approx(0.5)  # over problems a and b
    assert micro.mean_tokens == result.mean_tokens  # tokens are per answer either way


@pytest.mark.parametrize("n", [5, 12, 13, 23, 24, 40])
def test_examples_are_at_most_the_asked_number_spread_over_all_items(n):
    items = [EvalItem(1 + i * 3 // n, f"p{i}", "5", f"{i}:") for i in range(n)]  # three levels, in order
    texts = ["<answer>5</answer>" if i % 2 == 0 else "<answer>4</answer>" for i in range(n)]
    result = tally(items, [encode(TOK, t) for t in texts], TOK, examples=12)
    assert len(result.examples) == min(n, 12)
    assert result.examples[0] == "[ok] 0:<answer>5</answer>   (answer 5)"
    shown = [int(e.split("] ", 1)[1].split(":", 1)[0]) for e in result.examples]
    assert shown == sorted(set(shown))  # distinct items, in order
    assert shown[-1] >= n - n // 12 - 1  # reaching the last level, not only the first items


def test_problems_watched_during_training_are_held_out_one_per_level_in_level_order():
    world = WorldConfig(max_level=3)
    prompts = sample_problems_for_logging(world)
    assert len(prompts) == 3  # one per level when there are fewer levels than asked for
    assert [p.count("+") + p.count("-") for p in prompts] == [1, 2, 3]  # level = number of operations
    assert all(is_heldout(p, world.heldout_fraction) for p in prompts)
    assert sample_problems_for_logging(world) == prompts  # the same every run

    eight = WorldConfig(max_level=8)
    picked = sample_problems_for_logging(eight, n=5)
    ops = [p.count("+") + p.count("-") for p in picked]
    assert len(picked) == 5 and ops == sorted(ops) and len(set(ops)) == 5  # five distinct levels, ascending
    assert all(is_heldout(p, eight.heldout_fraction) for p in picked)
