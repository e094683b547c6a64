"""Image prompt sets in the layouts researchers have: paths in JSONL, datasets Image structs in
Parquet and save_to_disk directories, raw bytes; their errors, one line naming file, row and image."""

import importlib.util
import io
import json
import re
from pathlib import Path

import datasets
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from k15.config import DataConfig, apply_overrides, base
from k15.data.prompts import EmbeddedImage, FieldMap, PromptRecord, prompt_hash, read_prompt_set, write_prompt_set
from k15.data.vision_prompts import load_image
from k15.errors import ConfigError, DataError

SETS = Path(__file__).parent / "prompt_sets"
SHAPES = FieldMap(prompt="question", id="qid", difficulty="grade")
GEOMETRY = FieldMap(prompt="problem", answer_from="boxed")
CHARTS = FieldMap(prompt="question", image="image", difficulty="level")


def _generator():
    spec = importlib.util.spec_from_file_location("make_image_prompt_sets", SETS / "make_image_prompt_sets.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


GEN = _generator()


def pixels(image) -> np.ndarray:
    return np.asarray(image.convert("RGB"))


def same_pixels(record: PromptRecord, names: list[str]) -> bool:
    """The record's images decode to the generator's drawings `names`, in that order."""
    got = [pixels(load_image(i, record.id)) for i in record.images]
    want = [pixels(GEN.image(n)) for n in names]
    return len(got) == len(want) and all(g.shape == w.shape and (g == w).all() for g, w in zip(got, want))


def png(colour: str = "red", size=(4, 4)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, format="PNG")
    return buffer.getvalue()


def write_rows(path: Path, rows: list) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def one_line_error(path: Path, fields: FieldMap, *parts: str) -> str:
    """read_prompt_set refuses `path` in one line holding every one of `parts` (regular expressions)."""
    with pytest.raises(DataError) as info:
        read_prompt_set(path, fields)
    message = str(info.value)
    assert "\n" not in message, message
    for part in parts:
        assert re.search(part, message), (part, message)
    return message


# --- the three fixture layouts


def test_jsonl_paths_map_fields_and_keep_several_images_in_order():
    records = read_prompt_set(SETS / "shapes_tiny.jsonl", SHAPES)
    assert [(r.id, r.answer, r.difficulty) for r in records] == [
        ("s1", "circle", 1), ("s2", "second", 2), ("s3", "2", 2), ("s4", "3", 1), ("s5", "yes", 1), ("s6", "no", 1)]
    for record, (_, _, _, names, _) in zip(records, GEN.SHAPES):
        names = [names] if isinstance(names, str) else names  # s4 gives one path, not a list
        assert same_pixels(record, names), record.id
        assert all(Path(i).is_absolute() and Path(i).parent == SETS / GEN.IMAGE_DIR for i in record.images)
    assert records[1].prompt == "Which has more corners, <image> or <image>? Answer first or second."
    # no markers in the text: one per image, before it
    assert records[2].prompt == "<image><image><image>How many of these shapes are red?"
    assert records[4].images != records[5].images  # the 16x48 and the 48x16 shape


def test_parquet_with_embedded_image_structs():
    records = read_prompt_set(SETS / "geometry_tiny.parquet", GEOMETRY)
    assert [r.answer for r in records] == ["4", "25", "\\frac{1}{4}", "128"]
    assert all(r.id == prompt_hash(r.prompt) and r.difficulty is None and r.domain == "math" for r in records)
    assert all(isinstance(i, EmbeddedImage) for r in records for i in r.images)
    for record, (_, _, images) in zip(records, GEN.GEOMETRY):
        assert same_pixels(record, [name for name, _ in images]), record.id
    assert [i.name for i in records[2].images] == ["geo_003a.png", "geo_003b.png"]  # the structs' paths, as names
    assert records[3].prompt.startswith("<image>The rectangle is 48 by 16.")
    assert records[0].extra == {}  # the image column is mapped, not carried as an extra field



def test_datasets_directory_with_one_image_a_row():
    records = read_prompt_set(SETS / "charts_tiny_dataset", CHARTS)
    assert [(r.answer, r.difficulty) for r in records] == [("second", 1), ("4", 1), ("yes", 1), ("8", 2)]
    for record, (question, _, name, _) in zip(records, GEN.CHARTS):
        assert record.prompt == "<image>" + question
        assert same_pixels(record, [name])
    assert records[0].images == records[3].images  # the same chart: equal bytes are the same image


def test_records_with_embedded_images_stay_frozen_and_hashable():
    records = read_prompt_set(SETS / "charts_tiny_dataset", CHARTS)
    assert len({*records, *read_prompt_set(SETS / "charts_tiny_dataset", CHARTS)}) == len(records)
    with pytest.raises(AttributeError):
        records[0].images[0].data = b""
    assert "bytes" in str(records[0].images[0]) and b"PNG" not in repr(records[0].images[0]).encode()


@pytest.mark.parametrize("name, fields", [("geometry_tiny.parquet", GEOMETRY), ("charts_tiny_dataset", CHARTS),
                                          ("shapes_tiny.jsonl", SHAPES)])
def test_written_sets_are_json_and_read_back_to_equal_pixels(tmp_path, name, fields):
    records = read_prompt_set(SETS / name, fields)
    write_prompt_set(records, tmp_path / "rl" / "prompts.jsonl")
    rows = [json.loads(line) for line in (tmp_path / "rl" / "prompts.jsonl").read_text().splitlines()]
    again = read_prompt_set(tmp_path / "rl" / "prompts.jsonl")
    assert [(r.id, r.prompt, r.answer, r.difficulty) for r in again] == [(r.id, r.prompt, r.answer, r.difficulty)
                                                                         for r in records]
    for row, before, after in zip(rows, records, again):
        for j, (a, b) in enumerate(zip(before.images, after.images)):
            if isinstance(a, EmbeddedImage):  # a file beside the set, named for the record
                assert row["images"][j] == f"images/{before.id}-{j}.png"
                assert Path(b).read_bytes() == a.data
            assert (pixels(load_image(a, before.id)) == pixels(load_image(b, after.id))).all()
        assert len(before.images) == len(after.images)


def test_written_image_names_are_safe_and_distinct(tmp_path):
    records = [PromptRecord(i, "<image>q", "a", None, "math", (EmbeddedImage(png(c)),))
               for i, c in (("a/b", "red"), ("a_b", "blue"))]
    write_prompt_set(records, tmp_path / "p.jsonl")
    rows = [json.loads(line) for line in (tmp_path / "p.jsonl").read_text().splitlines()]
    assert [r["images"] for r in rows] == [["images/a_b-0.png"], ["images/a_b-0_2.png"]]
    again = read_prompt_set(tmp_path / "p.jsonl")
    assert [pixels(load_image(r.images[0], r.id))[0, 0].tolist() for r in again] == [[255, 0, 0], [0, 0, 255]]


def test_embedded_images_reach_the_engine_like_files(tmp_path):
    import torch

    from k15.config import ModelConfig
    from k15.data.vision_prompts import image_prompt, image_tokens
    from k15.models.projector import ProjectorConfig
    from k15.models.vision import VisionConfig
    from k15.models.vlm import build_vlm
    from k15.tokenizer import build_synthetic_tokenizer

    tok = build_synthetic_tokenizer()
    torch.manual_seed(0)
    vlm = build_vlm(ModelConfig(hidden_size=16, num_layers=1, num_heads=2, num_kv_heads=2, intermediate_size=16),
                    tok, VisionConfig(patch_size=8, hidden_size=16, num_layers=1, num_heads=2, intermediate_size=16,
                                      max_side=64, max_pixels=4096), ProjectorConfig())
    (embedded,) = [r for r in read_prompt_set(SETS / "geometry_tiny.parquet", GEOMETRY) if len(r.images) == 2]
    write_prompt_set([embedded], tmp_path / "p.jsonl")
    (as_files,) = read_prompt_set(tmp_path / "p.jsonl")
    one, other = (image_prompt(r, tok, vlm) for r in (embedded, as_files))
    assert one.ids == other.ids and all(torch.equal(a, b) for a, b in zip(one.images, other.images))
    assert one.ids.count(vlm.image_token_id) == image_tokens(embedded, vlm) > 2  # both images' tokens, expanded


# --- the accepted forms of an image field


def test_one_path_absolute_paths_nulls_and_missing_fields(tmp_path):
    (tmp_path / "img").mkdir()
    Image.new("RGB", (3, 2), "blue").save(tmp_path / "img" / "b.png")
    elsewhere = tmp_path / "elsewhere.png"
    Image.new("RGB", (2, 2), "green").save(elsewhere)
    sub = tmp_path / "sub"
    sub.mkdir()
    one, absolute, *rest = read_prompt_set(write_rows(sub / "p.jsonl", [
        {"prompt": "<image>one path", "answer": "1", "images": "../img/b.png"},
        {"prompt": "<image>absolute", "answer": "2", "images": [str(elsewhere)]},
        {"prompt": "no image", "answer": "3", "images": None},
        {"prompt": "no field", "answer": "4"},
        {"prompt": "empty list", "answer": "5", "images": []},
    ]))
    assert one.images == (str(sub / "../img/b.png"),) and load_image(one.images[0], one.id).size == (3, 2)
    assert absolute.images == (str(elsewhere),)
    assert all(r.images == () and "<image>" not in r.prompt for r in rest)


def test_raw_bytes_and_structs_in_parquet(tmp_path):
    Image.new("RGB", (2, 3), "green").save(tmp_path / "g.png")
    struct = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    table = pa.table({
        "problem": ["bytes", "list of bytes", "struct with a path only", "a null"],
        "answer": ["1", "2", "3", "4"],
        "raw": pa.array([png("red"), None, None, None], type=pa.binary()),
        "several": pa.array([None, [png("red"), png("blue")], None, None], type=pa.list_(pa.binary())),
        "struct": pa.array([None, None, {"bytes": None, "path": "g.png"}, None], type=struct),
    })
    pq.write_table(table, tmp_path / "t.parquet")
    raw = read_prompt_set(tmp_path / "t.parquet", FieldMap(prompt="problem", image="raw"))
    assert raw[0].images == (EmbeddedImage(png("red")),) and [len(r.images) for r in raw] == [1, 0, 0, 0]
    several = read_prompt_set(tmp_path / "t.parquet", FieldMap(prompt="problem", image="several"))
    assert [pixels(load_image(i, "x"))[0, 0].tolist() for i in several[1].images] == [[255, 0, 0], [0, 0, 255]]
    assert several[1].prompt == "<image><image>list of bytes"
    by_path = read_prompt_set(tmp_path / "t.parquet", FieldMap(prompt="problem", image="struct"))
    assert by_path[2].images == (str(tmp_path / "g.png"),)  # a path-only struct: relative to the file


def test_the_image_field_comes_from_the_config():
    assert FieldMap.from_config(DataConfig(image_field="image")).image == "image"
    assert FieldMap.from_config(DataConfig()).image == "images"
    for bad in ("data.image_field=", "data.image_field=prompt"):
        with pytest.raises(ConfigError, match="data.image_field must name a field of its own"):
            apply_overrides(base(), [bad])


# --- errors: one line naming the file, the line or row, and the image


def test_missing_image_file(tmp_path):
    path = write_rows(tmp_path / "p.jsonl", [
        {"id": "a", "prompt": "<image>q", "answer": "1", "images": []},
        {"id": "b", "prompt": "<image><image>q", "answer": "1", "images": ["there.png", "gone.png"]}])
    Image.new("RGB", (2, 2)).save(tmp_path / "there.png")
    one_line_error(path, FieldMap(), r"p.jsonl:1: the prompt has 1 <image> placeholders but 0 images")
    path = write_rows(tmp_path / "p.jsonl", [{"id": "b", "prompt": "<image><image>q", "answer": "1",
                                              "images": ["there.png", "gone.png"]}])
    message = one_line_error(path, FieldMap(), r"p.jsonl:1: prompt b: cannot read image 2 of field 'images', "
                             r"/.*/gone.png: no such file$")
    assert message.count(str(tmp_path / "gone.png")) == 1


def test_unreadable_image_file(tmp_path):
    (tmp_path / "folder.png").mkdir()  # a path that exists but is no file
    path = write_rows(tmp_path / "p.jsonl", [{"prompt": "q", "answer": "1", "images": "folder.png"}])
    one_line_error(path, FieldMap(), r"p.jsonl:1: prompt p\w+: cannot read image 1 of field 'images', .*folder.png: "
                   r"a directory, not a file$")


def test_undecodable_image_file(tmp_path):
    (tmp_path / "notes.png").write_text("not a picture")
    path = write_rows(tmp_path / "p.jsonl", [{"prompt": "q", "answer": "1", "images": ["notes.png"]}])
    one_line_error(path, FieldMap(), r"p.jsonl:1: prompt \w+: cannot read image 1 of field 'images', .*notes.png: "
                   r"not an image PIL can decode$")


def test_undecodable_and_truncated_bytes_name_the_row(tmp_path):
    features = datasets.Features({"question": datasets.Value("string"), "answer": datasets.Value("string"),
                                  "image": datasets.Image()})
    good, whole = png("red"), png("blue", (32, 32))
    rows = {"question": ["a", "b", "c"], "answer": ["1", "2", "3"],
            "image": [{"bytes": good, "path": None}, {"bytes": b"garbage", "path": "x.png"},
                      {"bytes": whole[:-16], "path": None}]}  # the header reads; the data is cut short
    datasets.Dataset.from_dict(rows, features=features).save_to_disk(str(tmp_path / "ds"))
    fields = FieldMap(prompt="question", image="image")
    one_line_error(tmp_path / "ds", fields, r"ds row 2: prompt \w+: cannot read image 1 of field 'image', "
                   r"embedded image 'x.png' \(7 bytes\): not an image PIL can decode$")
    rows["image"][1] = {"bytes": good, "path": None}
    datasets.Dataset.from_dict(rows, features=features).to_parquet(str(tmp_path / "t.parquet"))
    one_line_error(tmp_path / "t.parquet", fields, r"t.parquet row 3: prompt \w+: cannot read image 1 of field "
                   r"'image', embedded image \(\d+ bytes\): broken PNG file")


def test_a_cut_short_jpeg_is_found_when_the_set_is_read(tmp_path):
    """PIL's verify() reads no JPEG data: the set is decoded when read, so this fails now, not mid-run."""
    Image.new("RGB", (64, 64), (10, 200, 30)).save(tmp_path / "whole.jpg", quality=90)
    data = (tmp_path / "whole.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 2])
    path = write_rows(tmp_path / "p.jsonl", [{"prompt": "q", "answer": "1", "images": ["whole.jpg"]},
                                             {"prompt": "q2", "answer": "1", "images": ["cut.jpg"]}])
    one_line_error(path, FieldMap(), r"p.jsonl:2: prompt \w+: cannot read image 1 of field 'images', .*cut.jpg: Truncated File Read$")


def test_a_text_row_keeps_a_literal_image_marker(tmp_path):
    path = write_rows(tmp_path / "p.jsonl", [{"prompt": "what does the svg <image> element do?", "answer": "draws"}])
    (record,) = read_prompt_set(path)
    assert record.prompt == "what does the svg <image> element do?" and record.images == ()


@pytest.mark.parametrize("value, message", [
    (7, r"p.jsonl:1: field 'images' \(data.image_field\) must hold image paths, .* got int \(image 1\)"),
    (["a.png", 3.5], r"p.jsonl:1: field 'images' .* got float \(image 2\)"),
    ([""], r"p.jsonl:1: field 'images' .* got an empty path \(image 1\)"),
    ({"bytes": None, "path": None}, r"p.jsonl:1: image 1 of field 'images' has neither bytes nor a path"),
    ({"bytes": "aGVsbG8=", "path": None}, r"p.jsonl:1: image 1 of field 'images' has 'bytes' of type str"),
    ({"url": "http://x/y.png"}, r"p.jsonl:1: field 'images' .* got dict \(image 1\)"),
])
def test_wrong_types_in_the_image_field(tmp_path, value, message):
    path = write_rows(tmp_path / "p.jsonl", [{"prompt": "q", "answer": "1", "images": value}])
    one_line_error(path, FieldMap(), message)


def test_marker_count_differs_from_image_count(tmp_path):
    Image.new("RGB", (2, 2)).save(tmp_path / "a.png")
    good = {"prompt": "<image>q", "answer": "1", "images": ["a.png"]}
    path = write_rows(tmp_path / "p.jsonl", [good, {**good, "prompt": "<image> and <image>?"}])
    one_line_error(path, FieldMap(),
                   r"p.jsonl:2: the prompt has 2 <image> placeholders but 1 images \(field 'images'\)$")
    # markers but the images under another name than the mapped one: say which fields the row has
    path = write_rows(tmp_path / "p.jsonl", [{"prompt": "<image>q", "answer": "1", "image": "a.png"}])
    one_line_error(path, FieldMap(), r"p.jsonl:1: the prompt has 1 <image> placeholders but 0 images",
                   r"there is no field 'images' \(set data.image_field; the row has: answer, image, prompt\)")


# --- the fixtures are the generator's


def test_the_generator_reproduces_the_fixtures(tmp_path):
    GEN.main(tmp_path)
    names = ["shapes_tiny.jsonl", "geometry_tiny.parquet",
             *(f"{GEN.IMAGE_DIR}/{p.name}" for p in (SETS / GEN.IMAGE_DIR).iterdir()),
             *(f"charts_tiny_dataset/{p.name}" for p in (SETS / "charts_tiny_dataset").iterdir())]
    for name in names:
        assert (tmp_path / name).read_bytes() == (SETS / name).read_bytes(), name
    assert sorted(p.name for p in (tmp_path / GEN.IMAGE_DIR).iterdir()) == sorted(
        p.name for p in (SETS / GEN.IMAGE_DIR).iterdir())
    assert all((SETS / n).stat().st_size < 8000 for n in names)  # small enough to commit
