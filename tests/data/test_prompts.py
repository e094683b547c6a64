import json

import pytest

from k15.config import WorldConfig
from k15.data.prompts import PromptRecord, read_prompt_set, synthetic_prompt_set, write_prompt_set
from k15.errors import DataError
from k15.synthetic.arithmetic import is_heldout

GOOD = {"id": "a", "prompt": "1+1=", "answer": "2", "difficulty": 1, "domain": "arithmetic"}


def write_rows(path, rows):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))


def test_synthetic_set_round_trips_through_jsonl(tmp_path):
    records = synthetic_prompt_set(WorldConfig(), 50, seed=0)
    assert len({r.id for r in records}) == 50
    assert not any(is_heldout(r.prompt, WorldConfig().heldout_fraction) for r in records)
    write_prompt_set(records, tmp_path / "p.jsonl")
    assert read_prompt_set(tmp_path / "p.jsonl") == records


def test_user_rows_with_optional_fields_load(tmp_path):
    row = {**GOOD, "images": ["img/1.png"], "tests": [{"input": "1", "output": "2"}], "pass_rate": 0.3, "source": "mine"}
    write_rows(tmp_path / "p.jsonl", [row])
    (record,) = read_prompt_set(tmp_path / "p.jsonl")
    # image paths are relative to the prompt file
    assert record.images == (str(tmp_path / "img/1.png"),) and record.pass_rate == 0.3 and record.extra == {"source": "mine"}


@pytest.mark.parametrize(
    "bad, message",
    [
        ({k: v for k, v in GOOD.items() if k != "answer"}, r"p.jsonl:2: field 'answer' is missing"),
        ({**GOOD, "id": "b", "difficulty": "hard"}, r"p.jsonl:2: field 'difficulty' must be int"),
        ({**GOOD, "id": "b", "answer": " "}, r"p.jsonl:2: field 'answer' is empty"),
        ({**GOOD, "id": "b", "pass_rate": 2}, r"p.jsonl:2: field 'pass_rate'"),
        (GOOD, r"p.jsonl:2: field 'id' repeats 'a' from line 1"),
        ("{oops", r"p.jsonl:2: not valid JSON"),
    ],
)
def test_malformed_rows_name_file_line_and_field(tmp_path, bad, message):
    write_rows(tmp_path / "p.jsonl", [GOOD, bad])
    with pytest.raises(DataError, match=message):
        read_prompt_set(tmp_path / "p.jsonl")


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match="prompt set not found"):
        read_prompt_set(tmp_path / "nope.jsonl")
