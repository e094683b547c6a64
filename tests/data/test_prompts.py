import json
from pathlib import Path

import pytest
from PIL import Image

from k15.config import WorldConfig
from k15.data.prompts import FieldMap, PromptRecord, prompt_hash, read_prompt_set, synthetic_prompt_set, write_prompt_set
from k15.errors import DataError
from k15.synthetic.arithmetic import is_heldout

SETS = Path(__file__).parent / "prompt_sets"
MATH = FieldMap(prompt="problem", answer="solution", answer_from="boxed", difficulty="level")
GSM8K = FieldMap(prompt="question", answer="answer", answer_from="gsm8k")
MATH_ANSWERS = ["-7", "\\frac{3}{4}", "\\sqrt{2}", "(2,3)", "\\frac{\\sqrt{3}}{2}", "42", "2", "\\frac{1}{6}", "56", "28", "9",
                "\\dfrac{99}{100}"]

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
    (tmp_path / "img").mkdir()
    Image.new("RGB", (2, 2)).save(tmp_path / "img/1.png")  # images are opened when the set is read
    (record,) = read_prompt_set(tmp_path / "p.jsonl")
    # image paths are relative to the prompt file
    assert record.images == (str(tmp_path / "img/1.png"),) and record.pass_rate == 0.3 and record.extra == {"source": "mine"}


@pytest.mark.parametrize(
    "bad, message",
    [
        ({k: v for k, v in GOOD.items() if k != "answer"}, r"p.jsonl:2: field 'answer' is missing"),
        ({**GOOD, "id": "b", "difficulty": "level 3 or 4"}, r"p.jsonl:2: field 'difficulty' \(data.difficulty_field\) must be int"),
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
    with pytest.raises(DataError, match="rl.prompt_path: not found"):
        read_prompt_set(tmp_path / "nope.jsonl", what="rl.prompt_path")


@pytest.mark.parametrize("name", ["math_tiny.parquet", "math_tiny_dataset"])
def test_math_style_sets_map_fields_and_take_the_last_box(name):
    records = read_prompt_set(SETS / name, MATH)
    assert [r.answer for r in records] == MATH_ANSWERS
    assert records[0].prompt.startswith("Solve for $x$") and records[0].difficulty == 1  # "Level 1"
    assert {r.difficulty for r in records} <= {1, 2, 3, 4, 5}
    assert all(r.domain == "math" for r in records)  # the default domain: the math verifier
    assert all(r.id == prompt_hash(r.prompt) for r in records)  # no id field: a hash of the prompt
    assert records[0].extra["type"] == "Algebra"


def test_gsm8k_style_set_takes_the_value_after_the_hashes():
    records = read_prompt_set(SETS / "gsm8k_tiny.jsonl", GSM8K)
    assert len(records) == 12 and records[0].answer == "39" and records[0].difficulty is None
    assert all(r.answer.lstrip("-").isdigit() for r in records)


def test_a_prompt_and_an_answer_are_all_a_row_needs(tmp_path):
    write_rows(tmp_path / "p.jsonl", [{"prompt": "what is 2+2?", "answer": "4"}, {"prompt": "what is 2+2?", "answer": 4}])
    first, second = read_prompt_set(tmp_path / "p.jsonl")
    assert (first.answer, second.answer, first.domain, first.difficulty) == ("4", "4", "math", None)
    assert first.id == prompt_hash("what is 2+2?") and second.id == first.id + "-2"  # a repeated text: numbered


def test_a_row_without_the_mapped_field_names_file_line_and_key(tmp_path):
    write_rows(tmp_path / "p.jsonl", [{"question": "q", "answer": "#### 3"}, {"query": "q2", "answer": "#### 4"}])
    with pytest.raises(DataError, match=r"p.jsonl:2: field 'question' is missing \(set data.prompt_field; the row has: answer, query\)"):
        read_prompt_set(tmp_path / "p.jsonl", GSM8K)


def test_rows_without_a_gold_answer_are_counted_and_refused_above_the_threshold(tmp_path, capsys):
    rows = [{"question": f"q{i}", "answer": f"so {i}\n#### {i}"} for i in range(19)] + [{"question": "q", "answer": "no hashes"}]
    write_rows(tmp_path / "p.jsonl", rows)
    assert len(read_prompt_set(tmp_path / "p.jsonl", GSM8K)) == 19  # 1 of 20 = 5%: within the default threshold
    assert "found no gold answer in field 'answer' of 1 of 20 rows (first: " in capsys.readouterr().err
    strict = FieldMap(prompt="question", answer="answer", answer_from="gsm8k", max_missing_answers=0.0)
    with pytest.raises(DataError, match=r"1 of 20 rows \(first: .*p.jsonl:20\); that is more than data.max_missing_answers=0"):
        read_prompt_set(tmp_path / "p.jsonl", strict)


def test_labels_without_a_number_nulls_and_columns_json_cannot_hold(tmp_path):
    import datetime

    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table({
        "problem": ["p1", "p2", "p3", "p4"],
        "solution": ["so \\boxed{1}", None, "so \\boxed{3}", "so \\boxed{4}"],
        "level": ["Level 2", "Level 1", "Level ?", None],
        "answer": ["WRONG"] * 4,  # a raw column named like one of k15's own fields
        "seen": [datetime.datetime(2025, 1, 1)] * 4,
    })
    pq.write_table(table, tmp_path / "m.parquet")
    fields = FieldMap(prompt="problem", answer="solution", answer_from="boxed", difficulty="level", max_missing_answers=0.3)
    records = read_prompt_set(tmp_path / "m.parquet", fields)
    # the null solution is a missing gold answer (1 of 4, left out); "Level ?" and a null level are no label
    assert [(r.prompt, r.answer, r.difficulty) for r in records] == [("p1", "1", 2), ("p3", "3", None), ("p4", "4", None)]
    write_prompt_set(records, tmp_path / "out.jsonl")
    rows = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert [r["answer"] for r in rows] == ["1", "3", "4"] and "seen" not in rows[0]  # mapped fields win; no datetime
