"""A checkpoint directory with a part missing is one line naming the directory and the part, on every load path."""

import json

import pytest
import torch

from k15.config import ModelConfig
from k15.errors import CheckpointError
from k15.models.checkpoint_dir import check_model_dir, check_tokenizer_dir
from k15.models.decoder import build_decoder, export, load_decoder, load_model_and_tokenizer
from k15.tokenizer import build_synthetic_tokenizer, load_tokenizer

TINY = ModelConfig(hidden_size=32, num_layers=1, num_heads=2, num_kv_heads=2, intermediate_size=32, max_seq_len=64)
EXPECTED_TOKENIZER = ("expected tokenizer.json, or tokenizer_config.json with vocab.json + merges.txt, "
                      "or tokenizer.model")


def make_dir(path, *files):
    path.mkdir(parents=True, exist_ok=True)
    for name in files:
        (path / name).write_text("{}")
    return path


def error_of(check, *args) -> str:
    with pytest.raises(CheckpointError) as info:
        check(*args)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_missing_directory_file_and_hub_id(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # "Qwen/Qwen2.5-0.5B" is not a directory here
    assert error_of(check_model_dir, tmp_path / "nope") == f"model.init_from={tmp_path / 'nope'}: directory not found"
    make_dir(tmp_path, "weights.bin")
    assert (error_of(check_model_dir, tmp_path / "weights.bin", "eval.model")
            == f"eval.model={tmp_path / 'weights.bin'}: is a file, not a checkpoint directory")
    assert error_of(check_model_dir, "Qwen/Qwen2.5-0.5B") == (
        "model.init_from=Qwen/Qwen2.5-0.5B: no such directory; this looks like a Hugging Face hub id, and k15 never "
        "downloads (no network at run time): on a machine with network run `huggingface-cli download "
        "Qwen/Qwen2.5-0.5B --local-dir DIR`, then pass model.init_from=DIR")
    assert "hub id" in error_of(check_tokenizer_dir, "meta-llama/Llama-3.2-1B-Instruct")
    assert "hub id" not in error_of(check_model_dir, "./runs/x")  # a relative path that reads like one is a path


def test_config_weights_and_shards(tmp_path):
    d = make_dir(tmp_path / "m", "tokenizer.json")
    assert error_of(check_model_dir, d) == f"model.init_from={d}: no config.json in {d}"
    make_dir(d, "config.json")
    assert error_of(check_model_dir, d) == (
        f"model.init_from={d}: no weights in {d} (expected model.safetensors, model.safetensors.index.json with its "
        "shards, or pytorch_model.bin)")
    index = {"weight_map": {"a": "model-00001-of-00003.safetensors", "b": "model-00002-of-00003.safetensors",
                            "c": "model-00003-of-00003.safetensors"}}
    (d / "model.safetensors.index.json").write_text(json.dumps(index))
    make_dir(d, "model-00001-of-00003.safetensors")
    assert error_of(check_model_dir, d) == (
        f"model.init_from={d}: model.safetensors.index.json names shards that are not in {d}: "
        "model-00002-of-00003.safetensors, model-00003-of-00003.safetensors")
    make_dir(d, "model-00002-of-00003.safetensors", "model-00003-of-00003.safetensors")
    check_model_dir(d)
    check_model_dir(make_dir(tmp_path / "bin", "config.json", "pytorch_model.bin", "tokenizer.json"))


def test_tokenizer_files(tmp_path):
    d = make_dir(tmp_path / "m", "config.json", "model.safetensors")
    assert error_of(check_model_dir, d) == (
        f"model.init_from={d}: no tokenizer files in {d} (none; {EXPECTED_TOKENIZER}); "
        "copy them from where the model came from, or set model.tokenizer=DIR")
    check_model_dir(d, tokenizer=False)  # model.tokenizer names another directory
    make_dir(d, "tokenizer_config.json", "vocab.json")
    assert error_of(check_model_dir, d) == (
        f"model.init_from={d}: no tokenizer files in {d} (only tokenizer_config.json, vocab.json; "
        f"{EXPECTED_TOKENIZER}); "
        "copy them from where the model came from, or set model.tokenizer=DIR")
    make_dir(d, "merges.txt")
    check_model_dir(d)
    check_tokenizer_dir(make_dir(tmp_path / "spm", "tokenizer.model"))
    empty = make_dir(tmp_path / "tok")
    assert error_of(check_tokenizer_dir, empty) == (
        f"model.tokenizer={empty}: no tokenizer files in {empty} (none; {EXPECTED_TOKENIZER}); "
        "point it at a directory that has them")


def test_k15_vlm_layout(tmp_path):
    d = make_dir(tmp_path / "vlm", "tokenizer.json")
    (d / "k15_vlm.json").write_text(json.dumps({"format": "k15"}))
    assert (error_of(check_model_dir, d)
            == f"model.init_from={d} (k15 VLM layout, decoder/): no config.json in {d / 'decoder'}")
    make_dir(d / "decoder", "config.json", "model.safetensors")
    assert error_of(check_model_dir, d) == (
        f"model.init_from={d}: no vision.safetensors in {d} "
        "(the k15 VLM layout keeps the vision tower and projector there)")
    make_dir(d, "vision.safetensors")
    check_model_dir(d)
    (d / "k15_vlm.json").write_text(json.dumps({"format": "llava"}))  # a transformers layout: checked like any model
    assert error_of(check_model_dir, d) == f"model.init_from={d}: no config.json in {d}"
    (d / "k15_vlm.json").write_text("not json")
    assert error_of(check_model_dir, d) == f'model.init_from={d}: k15_vlm.json is unreadable or has no "format"'


def test_every_load_path_gives_the_one_line_error(tmp_path):
    torch.manual_seed(0)
    tok = build_synthetic_tokenizer()
    d = export(build_decoder(TINY, tok), tok, tmp_path / "m")
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (d / name).unlink()
    # Was: an empty tokenizer, then "ValueError: every prompt needs at least one token" much later.
    no_tok = f"no tokenizer files in {d} (none; {EXPECTED_TOKENIZER})"
    assert no_tok in error_of(load_model_and_tokenizer, ModelConfig(init_from=str(d)))
    assert error_of(load_model_and_tokenizer, TINY, d).startswith(f"init_from={d}: no tokenizer files")
    assert error_of(load_tokenizer, d).startswith(f"model.tokenizer={d}: {no_tok}")
    assert error_of(load_tokenizer, tmp_path / "gone") == f"model.tokenizer={tmp_path / 'gone'}: directory not found"
    load_decoder(d)  # the model alone needs no tokenizer
    tok.save_pretrained(tmp_path / "tok")
    model, again = load_model_and_tokenizer(ModelConfig(init_from=str(d), tokenizer=str(tmp_path / "tok")))
    assert len(again) == len(tok)
    (d / "model.safetensors").unlink()
    assert error_of(load_decoder, d).startswith(f"model.init_from={d}: no weights in {d}")
