"""Rows of a prompt or SFT set, whatever file they come in, as plain Python dicts.

Formats, chosen by what the path is:

- a `.jsonl` / `.json` file of JSON lines, one object a line (blank lines skipped);
- a `.parquet` file, read with pyarrow, or a directory of them (the shards of a hub download,
  `train-00000-of-00002.parquet`, ...), read in name order;
- a directory written by `datasets.Dataset.save_to_disk` (a DatasetDict directory is refused:
  pass DIR/SPLIT).

Each row comes with `where` for error messages: `FILE:LINE` for JSON lines (1-based line number of
the file), `FILE row N` for Parquet and datasets directories (1-based). Values are plain Python:
str, int, float, bool, None, list, dict, bytes for binary columns; image columns of `datasets`
stay undecoded dicts {"bytes", "path"}. Every problem is a one-line DataError naming the setting
(`what`, e.g. "rl.prompt_path") and the path.
"""

from __future__ import annotations

import json
from pathlib import Path

from k15.errors import DataError

JSONL_SUFFIXES = (".jsonl", ".json")
KNOWN = ".jsonl, .json (JSON lines), .parquet, a directory of .parquet files, or one written by datasets' save_to_disk"


def read_rows(path: str | Path, what: str) -> list[tuple[str, dict]]:
    path = Path(path)
    if not path.exists():
        raise DataError(f"{what}: not found: {path}")
    shards = sorted(path.glob("*.parquet")) if path.is_dir() and not (path / "state.json").exists() else []
    if shards:
        rows = [row for shard in shards for row in _read_parquet(shard, what)]
    elif path.is_dir():
        rows = _read_datasets_dir(path, what)
    elif path.suffix.lower() in JSONL_SUFFIXES:
        rows = _read_jsonl(path, what)
    elif path.suffix.lower() == ".parquet":
        rows = _read_parquet(path, what)
    else:
        raise DataError(f"{what}: {path}: unknown format '{path.suffix}' (known: {KNOWN})")
    if not rows:
        raise DataError(f"{what}: {path}: no rows")
    return rows


def write_jsonl(rows: list[dict], path: str | Path) -> None:
    """One JSON object a line, keys in the given order: the same rows give the same bytes."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8", newline="\n") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


def _read_jsonl(path: Path, what: str) -> list[tuple[str, dict]]:
    rows = []
    # a .json file is often one big array or object, which is not this format: say so
    hint = " (a .json file is read as JSON lines, one object a line)" if path.suffix.lower() == ".json" else ""
    try:
        # utf-8-sig: a byte-order mark from a Windows editor is not worth an error
        with path.open(encoding="utf-8-sig") as f:
            for line_no, line in enumerate(f, 1):
                if not line.strip():
                    continue
                where = f"{path}:{line_no}"
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise DataError(f"{what}: {where}: not valid JSON ({exc.msg} at column {exc.colno}){hint}") from None
                if not isinstance(row, dict):
                    raise DataError(f"{what}: {where}: a row must be a JSON object, got {_json_kind(row)}{hint}")
                rows.append((where, row))
    except UnicodeDecodeError as exc:
        raise DataError(f"{what}: {path}: not UTF-8 text (byte {exc.start})") from None
    return rows


def _read_parquet(path: Path, what: str) -> list[tuple[str, dict]]:
    import pyarrow as pa  # imported here: only Parquet users pay for it
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise DataError(f"{what}: {path}: not a readable Parquet file ({_one_line(exc)})") from None
    return [(f"{path} row {i}", row) for i, row in enumerate(table.to_pylist(), 1)]


def _read_datasets_dir(path: Path, what: str) -> list[tuple[str, dict]]:
    splits_file = path / "dataset_dict.json"
    if splits_file.is_file():
        try:
            splits = ", ".join(json.loads(splits_file.read_text())["splits"])
        except (ValueError, KeyError, TypeError):
            splits = "unknown"
        raise DataError(f"{what}: {path} is a DatasetDict with splits {splits}; pass {path}/SPLIT")
    state_file = path / "state.json"
    if not state_file.is_file():
        raise DataError(f"{what}: {path} is a directory but neither one of .parquet files nor one written by "
                        "datasets' save_to_disk (no state.json)")
    import datasets  # imported here: slow to import, and only these directories need it

    try:
        # save_to_disk of an empty dataset writes no data file, and load_from_disk then fails
        if json.loads(state_file.read_text()).get("_data_files") == []:
            return []
        dataset = datasets.load_from_disk(str(path))
        # the arrow view keeps image and audio columns as raw {"bytes", "path"} dicts (no decoding)
        table = dataset.with_format("arrow")[:]
    except Exception as exc:  # datasets raises many kinds (json, arrow, file errors) for a damaged directory
        raise DataError(f"{what}: {path}: not a readable datasets directory ({_one_line(exc)})") from None
    return [(f"{path} row {i}", row) for i, row in enumerate(table.to_pylist(), 1)]


def _json_kind(value: object) -> str:
    kinds = {list: "array", str: "string", bool: "boolean", int: "number", float: "number", type(None): "null"}
    return kinds.get(type(value), type(value).__name__)


def _one_line(exc: Exception) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__
