"""The CoT RM's verdict: both spellings read back, the last one wins, no verdict is counted."""

import pytest

from k15.reward_models.verdicts import (OK, UNPARSED, Verdict, default_format, format_verdict, parse_verdict,
                                        resolve_format)
from k15.tokenizer import build_synthetic_tokenizer


@pytest.mark.parametrize("fmt", ["json", "plain"])
@pytest.mark.parametrize("correct", [True, False])
def test_written_verdicts_read_back(fmt, correct):
    text = f"ref 8, resp 8, same. {format_verdict(correct, fmt)}"
    assert parse_verdict(text) == Verdict(correct, OK)


def test_spellings():
    assert format_verdict(True, "json") == '{"correct": true}'
    assert format_verdict(False, "plain") == "correct: false"
    assert parse_verdict('{"reason": "same value", "correct": false}') == (False, OK)
    assert parse_verdict("Correct: Yes") == (True, OK) and parse_verdict("correct:no") == (False, OK)
    assert parse_verdict('so {"correct": true}.') == (True, OK)


def test_the_last_verdict_wins_across_spellings():
    assert parse_verdict('correct: false ... {"correct": true}').correct is True
    assert parse_verdict('{"correct": true} wait, correct: false').correct is False
    assert parse_verdict("correct: true correct: false correct: true").correct is True


@pytest.mark.parametrize("text", [
    "", "ref 8, resp 8, same.", '{"correct": "true"}', '{"correct": 1}', '{"correct": tru', "correct: maybe",
    "incorrect", '{"verdict": true}',
])
def test_no_verdict_is_unparsed(text):
    assert parse_verdict(text) == Verdict(None, UNPARSED)


def test_a_json_verdict_is_not_read_twice():
    # the plain pattern must not see the inside of a JSON object that says something else
    assert parse_verdict('{"note": "correct: true", "correct": false}').correct is False


def test_format_follows_the_tokenizer():
    tok = build_synthetic_tokenizer()  # no `{` and no `"`
    assert default_format(tok) == "plain" and resolve_format("auto", tok) == "plain"
    with pytest.raises(ValueError, match="cannot encode"):
        resolve_format("json", tok)
    with pytest.raises(ValueError):
        resolve_format("xml", tok)


def test_json_for_a_byte_level_tokenizer(tiny_qwen2):
    from transformers import AutoTokenizer

    assert default_format(AutoTokenizer.from_pretrained(str(tiny_qwen2))) == "json"
