import json

import pytest

from k15.data.packing import IGNORE
from k15.chat import RAW
from k15.data.sft import read_sft_examples
from k15.errors import DataError
from k15.synthetic.traces import Piece
from k15.tokenizer import build_synthetic_tokenizer


def test_labels_cover_response_only_and_skip_untrained_pieces():
    tok = build_synthetic_tokenizer()
    ids, labels = RAW.example(tok, "5+4=", [Piece("<think>1:5+4="), Piece("7", False), Piece(" wait 5+4=9</think><answer>9</answer>")])
    prompt_len = 1 + 4  # <bos> 5 + 4 =
    assert labels[:prompt_len] == [IGNORE] * prompt_len
    wrong_at = prompt_len + len(tok.encode("<think>1:5+4=", add_special_tokens=False))
    assert ids[wrong_at] == tok.convert_tokens_to_ids("7") and labels[wrong_at] == IGNORE
    assert labels[wrong_at + 1 :] == ids[wrong_at + 1 :]
    assert labels[prompt_len:wrong_at] == ids[prompt_len:wrong_at]


def test_jsonl_errors_name_file_line_and_field(tmp_path):
    path = tmp_path / "sft.jsonl"
    path.write_text(json.dumps({"prompt": "1+1=", "response": "<answer>2</answer>"}) + "\n" + json.dumps({"prompt": "2+2="}) + "\n")
    with pytest.raises(DataError, match=r"sft.jsonl:2: field 'response' \(data.response_field\) missing"):
        read_sft_examples(path)
    path.write_text("{not json\n")
    with pytest.raises(DataError, match=r"sft.jsonl:1: not valid JSON"):
        read_sft_examples(path)
    with pytest.raises(DataError, match="not found"):
        read_sft_examples(tmp_path / "missing.jsonl")


def test_over_long_examples_are_dropped_and_reported(tmp_path, capsys):
    from k15.config import SFTConfig, WorldConfig
    from k15.data.sft import SFTDataModule

    path = tmp_path / "sft.jsonl"
    rows = [{"prompt": "1+1=", "response": "<answer>2</answer>"}, {"prompt": "1+1=", "response": "1" * 80 + "<answer>2</answer>"}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    data = SFTDataModule(build_synthetic_tokenizer(), SFTConfig(data_path=str(path)), WorldConfig(), seed=0, max_len=32)
    data.setup()
    assert len(data.examples) == 1 and data.dropped == 1
    assert "dropped 1 of 2 examples" in capsys.readouterr().err
