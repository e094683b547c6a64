import importlib.util
import io
import json
import re
from pathlib import Path

import datasets
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from k15.data.tables import read_rows, write_jsonl
from k15.errors import DataError

SETS = Path(__file__).parent / "prompt_sets"
WHAT = "rl.prompt_path"
MATH_ANSWERS = ["-7", r"\frac{3}{4}", r"\sqrt{2}", "(2,3)", r"\frac{\sqrt{3}}{2}", "42", "2", r"\frac{1}{6}", "56",
                "28", "9", r"\dfrac{99}{100}"]


def fails(path, match):
    """read_rows refuses `path` with a one-line message naming the setting and `match`."""
    with pytest.raises(DataError) as info:
        read_rows(path, WHAT)
    message = str(info.value)
    assert "\n" not in message and message.startswith(f"{WHAT}: ") and str(path) in message
    assert re.search(match, message), message
    return message


def last_boxed(solution):
    start = solution.rindex(r"\boxed{") + len(r"\boxed{")
    depth = 1
    for i, ch in enumerate(solution[start:], start):
        depth += {"{": 1, "}": -1}.get(ch, 0)
        if depth == 0:
            return solution[start:i]
    raise AssertionError("unbalanced braces")


# --- the fixtures, in each format


def test_gsm8k_jsonl_rows_and_lines():
    path = SETS / "gsm8k_tiny.jsonl"
    rows = read_rows(path, WHAT)
    assert [w for w, _ in rows] == [f"{path}:{n}" for n in range(1, 13)]
    for _, row in rows:
        assert set(row) == {"question", "answer"}
        *steps, final = row["answer"].split("\n")
        assert steps and re.fullmatch(r"#### \d+", final)
        # every calculator annotation is right
        for expr, value in re.findall(r"<<([\d+\-*/. ]+)=([\d.]+)>>", row["answer"]):
            assert eval(expr) == float(value), (expr, value)
    text = path.read_text()
    assert "<<48/2=24>>" in text and "1,200" in text


def test_math_parquet_and_datasets_dir_hold_the_same_rows():
    parquet, directory = SETS / "math_tiny.parquet", SETS / "math_tiny_dataset"
    from_parquet, from_dir = read_rows(parquet, WHAT), read_rows(directory, WHAT)
    assert [w for w, _ in from_parquet] == [f"{parquet} row {n}" for n in range(1, 13)]
    assert [w for w, _ in from_dir] == [f"{directory} row {n}" for n in range(1, 13)]
    rows = [r for _, r in from_parquet]
    assert rows == [r for _, r in from_dir]
    assert [last_boxed(r["solution"]) for r in rows] == MATH_ANSWERS
    assert {r["level"] for r in rows} == {f"Level {n}" for n in range(1, 6)}
    assert all(set(r) == {"problem", "solution", "level", "type"} and isinstance(r["type"], str) for r in rows)


def test_sft_jsonl_rows():
    rows = read_rows(SETS / "sft_tiny.jsonl", "sft.data_path")
    assert len(rows) == 8 and all(set(r) == {"prompt", "response"} for _, r in rows)
    assert all(r["response"].endswith("</answer>") for _, r in rows)


def test_generator_reproduces_the_files(tmp_path):
    spec = importlib.util.spec_from_file_location("make_prompt_sets", SETS / "make_prompt_sets.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.main(tmp_path)
    names = ["gsm8k_tiny.jsonl", "sft_tiny.jsonl", "math_tiny.parquet",
             *(f"math_tiny_dataset/{p.name}" for p in (SETS / "math_tiny_dataset").iterdir())]
    for name in names:
        assert (tmp_path / name).read_bytes() == (SETS / name).read_bytes(), name


# --- details of each format


def test_jsonl_skips_blank_lines_but_counts_them(tmp_path):
    path = tmp_path / "p.json"  # .json is read as JSON lines too
    path.write_text('\n{"a": 1}\n   \n{"a": [2, {"b": null}]}\n\n', encoding="utf-8")
    assert read_rows(path, WHAT) == [(f"{path}:2", {"a": 1}), (f"{path}:4", {"a": [2, {"b": None}]})]


def test_parquet_values_come_back_as_plain_python(tmp_path):
    path = tmp_path / "p.parquet"
    table = pa.table({
        "text": ["x", "y"], "n": [1, 2], "score": [0.5, None], "tags": [["a"], []],
        "meta": [{"k": 1}, {"k": 2}], "blob": pa.array([b"\x00\xff", b""], type=pa.binary()),
    })
    pq.write_table(table, path)
    rows = read_rows(path, WHAT)
    assert rows[0] == (f"{path} row 1", {"text": "x", "n": 1, "score": 0.5, "tags": ["a"], "meta": {"k": 1}, "blob": b"\x00\xff"})
    assert rows[1][1]["blob"] == b"" and type(rows[1][1]["blob"]) is bytes and rows[1][1]["score"] is None


def test_datasets_image_column_is_not_decoded(tmp_path):
    png = io.BytesIO()
    Image.new("RGB", (2, 2), "red").save(png, format="PNG")
    features = datasets.Features({"prompt": datasets.Value("string"), "image": datasets.Image()})
    ds = datasets.Dataset.from_dict({"prompt": ["what colour?"], "image": [{"bytes": png.getvalue(), "path": None}]},
                                    features=features)
    ds.save_to_disk(str(tmp_path / "ds"))
    ((where, row),) = read_rows(tmp_path / "ds", WHAT)
    assert where == f"{tmp_path / 'ds'} row 1"
    assert row == {"prompt": "what colour?", "image": {"bytes": png.getvalue(), "path": None}}


# --- problems: one line each, naming the setting, the path and the line or row


def test_missing_path(tmp_path):
    fails(tmp_path / "nope.jsonl", "not found")


def test_directory_that_is_not_a_datasets_directory(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "rows.jsonl").write_text('{"a": 1}\n')
    fails(tmp_path / "d", r"neither one of .parquet files nor one written by datasets' save_to_disk")


def test_dataset_dict_directory_lists_its_splits(tmp_path):
    ds = datasets.Dataset.from_list([{"a": 1}])
    datasets.DatasetDict({"train": ds, "test": ds}).save_to_disk(str(tmp_path / "dd"))
    message = fails(tmp_path / "dd", r"DatasetDict with splits train, test; pass .*dd/SPLIT")
    assert read_rows(tmp_path / "dd" / "test", WHAT) == [(f"{tmp_path / 'dd' / 'test'} row 1", {"a": 1})]
    assert message.count(str(tmp_path / "dd")) == 2


def test_unknown_extension_lists_the_known_ones(tmp_path):
    (tmp_path / "p.csv").write_text("a,b\n1,2\n")
    fails(tmp_path / "p.csv", r"unknown format '\.csv' \(known: \.jsonl, \.json .*\.parquet.*save_to_disk")


def test_corrupt_parquet(tmp_path):
    path = tmp_path / "p.parquet"
    path.write_bytes(b"PAR1 this is not parquet")
    fails(path, "not a readable Parquet file")


def test_corrupt_arrow_file_in_a_datasets_directory(tmp_path):
    datasets.Dataset.from_list([{"a": 1}]).save_to_disk(str(tmp_path / "ds"))
    (arrow,) = (tmp_path / "ds").glob("*.arrow")
    arrow.write_bytes(b"garbage")
    fails(tmp_path / "ds", "not a readable datasets directory")


def test_invalid_json_names_the_line_and_the_error(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text('{"a": 1}\n\n{"a": 2,}\n')
    message = fails(path, r"p\.jsonl:3: not valid JSON \(.+ at column \d+\)")
    assert message.startswith(f"{WHAT}: {path}:3: ")


@pytest.mark.parametrize("line, kind", [("[1, 2]", "array"), ('"text"', "string"), ("7", "number"), ("null", "null")])
def test_jsonl_line_that_is_not_an_object(tmp_path, line, kind):
    path = tmp_path / "p.jsonl"
    path.write_text('{"a": 1}\n' + line + "\n")
    fails(path, rf"p\.jsonl:2: a row must be a JSON object, got {kind}$")


def test_json_array_file_gets_a_hint(tmp_path):
    path = tmp_path / "p.json"
    path.write_text('[{"a": 1},\n {"a": 2}]\n')
    fails(path, r"p\.json:1: not valid JSON .*\(a \.json file is read as JSON lines, one object a line\)$")
    path.write_text('[{"a": 1}, {"a": 2}]\n')
    fails(path, r"p\.json:1: a row must be a JSON object, got array \(a \.json file is read as JSON lines")


def test_not_utf8(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_bytes(b'{"a": "\xff"}\n')
    fails(path, "not UTF-8 text")


def test_empty_sets(tmp_path):
    (tmp_path / "e.jsonl").write_text("\n  \n")
    fails(tmp_path / "e.jsonl", "no rows$")
    pq.write_table(pa.table({"a": pa.array([], type=pa.int64())}), tmp_path / "e.parquet")
    fails(tmp_path / "e.parquet", "no rows$")
    datasets.Dataset.from_dict({"a": []}).save_to_disk(str(tmp_path / "e_ds"))
    fails(tmp_path / "e_ds", "no rows$")


def test_write_jsonl_round_trips(tmp_path):
    rows = [{"b": 1, "a": "é\n"}, {"x": [1.5, None]}]
    write_jsonl(rows, tmp_path / "sub" / "o.jsonl")
    assert [r for _, r in read_rows(tmp_path / "sub" / "o.jsonl", WHAT)] == rows
    assert json.loads((tmp_path / "sub" / "o.jsonl").read_text(encoding="utf-8").splitlines()[0]) == rows[0]


def test_a_directory_of_parquet_shards_reads_in_name_order(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    for i, names in enumerate((["a", "b"], ["c"])):
        pq.write_table(pa.table({"prompt": names}), tmp_path / f"train-0000{i}-of-00002.parquet")
    rows = read_rows(tmp_path, "rl.prompt_path")
    assert [r["prompt"] for _, r in rows] == ["a", "b", "c"]
    assert rows[2][0] == f"{tmp_path / 'train-00001-of-00002.parquet'} row 1"
