"""One-line errors for checkpoint directories that cannot be loaded, before transformers reads them.

transformers, given a directory with parts missing, either fails deep inside with a traceback or
(tokenizer files missing) quietly builds an empty tokenizer that fails much later. These checks
look only at file names, so they cost nothing and run before anything is loaded.

`check_model_dir(path, key)`, in order:
    1. a path that does not exist but reads like a hub id (`Qwen/Qwen2.5-0.5B`): k15 never downloads;
    2. the directory itself (missing, or a file);
    3. a k15 VLM directory (`k15_vlm.json`): in k15's own layout, the decoder in `decoder/` and the
       tower + projector in `vision.safetensors`; a transformers layout is checked like any model;
    4. `config.json`;
    5. weights: `model.safetensors`, a sharded index + every shard it names, or `pytorch_model.bin`;
    6. tokenizer files (`tokenizer=False` skips them, when `model.tokenizer` names another directory).
`check_tokenizer_dir(path, key)` does steps 1, 2 and 6. Every message starts with `key=path`.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from k15.errors import CheckpointError

VLM_SIDE_CAR = "k15_vlm.json"  # k15.models.vlm.SIDE_CAR (not imported: vlm imports the decoder, which imports this)
SINGLE_WEIGHTS = ("model.safetensors", "pytorch_model.bin")
SHARD_INDEXES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")
EXPECTED_WEIGHTS = "model.safetensors, model.safetensors.index.json with its shards, or pytorch_model.bin"
# A tokenizer is one of these file sets (tokenizer_config.json says which class reads the vocabulary files).
TOKENIZER_FILE_SETS = (("tokenizer.json",), ("tokenizer.model",), ("tokenizer_config.json", "vocab.json", "merges.txt"),
                       ("tokenizer_config.json", "tekken.json"), ("tokenizer_config.json", "vocab.txt"))
EXPECTED_TOKENIZER = ("tokenizer.json, or tokenizer_config.json with vocab.json + merges.txt, "
                      "or tokenizer.model")
HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")


def check_model_dir(path: str | Path, key: str = "model.init_from", tokenizer: bool = True) -> None:
    """CheckpointError (one line naming the directory and what is missing) unless `path` holds a loadable
    causal LM (or k15 VLM): config.json, weights and, with `tokenizer`, tokenizer files."""
    path = _existing_dir(path, key)
    if (path / VLM_SIDE_CAR).is_file() and _vlm_format(path, key) == "k15":
        _check_config_and_weights(path / "decoder", key, where=f"{path} (k15 VLM layout, decoder/)")
        if not (path / "vision.safetensors").is_file():
            raise CheckpointError(f"{key}={path}: no vision.safetensors in {path} (the k15 VLM layout keeps the "
                                  "vision tower and projector there)")
    else:
        _check_config_and_weights(path, key, where=str(path))
    if tokenizer:
        _check_tokenizer_files(path, key)


def check_tokenizer_dir(path: str | Path, key: str = "model.tokenizer") -> None:
    """CheckpointError (one line) unless `path` is a directory with tokenizer files."""
    _check_tokenizer_files(_existing_dir(path, key), key)


def _existing_dir(path: str | Path, key: str) -> Path:
    text = str(path)
    path = Path(path).expanduser()
    if not path.exists():
        if HUB_ID.fullmatch(text) and not text.startswith("."):
            raise CheckpointError(
                f"{key}={text}: no such directory; this looks like a Hugging Face hub id, and k15 never downloads "
                f"(no network at run time): on a machine with network run `huggingface-cli download {text} "
                f"--local-dir DIR`, then pass {key}=DIR"
            )
        raise CheckpointError(f"{key}={text}: directory not found")
    if not path.is_dir():
        raise CheckpointError(f"{key}={text}: is a file, not a checkpoint directory")
    return path


def _vlm_format(path: Path, key: str) -> str:
    try:
        return json.loads((path / VLM_SIDE_CAR).read_text())["format"]
    except (OSError, ValueError, KeyError, TypeError):
        raise CheckpointError(f"{key}={path}: {VLM_SIDE_CAR} is unreadable or has no \"format\"") from None


def _check_config_and_weights(model_dir: Path, key: str, where: str) -> None:
    if not (model_dir / "config.json").is_file():
        raise CheckpointError(f"{key}={where}: no config.json in {model_dir}")
    if any((model_dir / name).is_file() for name in SINGLE_WEIGHTS):
        return
    for index in SHARD_INDEXES:
        if (model_dir / index).is_file():
            missing = sorted(name for name in _shards(model_dir / index, key) if not (model_dir / name).is_file())
            if missing:
                more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
                raise CheckpointError(f"{key}={where}: {index} names shards that are not in {model_dir}: "
                                      f"{', '.join(missing[:3])}{more}")
            return
    raise CheckpointError(f"{key}={where}: no weights in {model_dir} (expected {EXPECTED_WEIGHTS})")


def _shards(index: Path, key: str) -> set[str]:
    try:
        return set(json.loads(index.read_text())["weight_map"].values())
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        raise CheckpointError(f"{key}={index.parent}: {index.name} is unreadable or has no weight_map") from None


def _check_tokenizer_files(path: Path, key: str) -> None:
    present = {p.name for p in path.iterdir() if p.is_file()}
    if any(set(files) <= present for files in TOKENIZER_FILE_SETS):
        return
    found = sorted(present & {name for files in TOKENIZER_FILE_SETS for name in files})
    have = f"only {', '.join(found)}" if found else "none"
    fix = ("point it at a directory that has them" if key == "model.tokenizer"
           else "copy them from where the model came from, or set model.tokenizer=DIR")
    raise CheckpointError(f"{key}={path}: no tokenizer files in {path} ({have}; expected {EXPECTED_TOKENIZER}); {fix}")
