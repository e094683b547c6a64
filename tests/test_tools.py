"""The files tools/make_synthetic.py writes load through the same code as a user's files."""

import runpy
import sys

from k15.data.pretrain import read_text_documents
from k15.data.prompts import read_prompt_set
from k15.data.sft import read_sft_examples
from k15.synthetic.arithmetic import is_heldout
from k15.tokenizer import load_tokenizer


def test_make_synthetic_writes_loadable_files(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["make_synthetic.py", str(tmp_path), "--prompts", "50", "--sft", "40", "--pretrain", "30", "--heldout-per-level", "5"])
    runpy.run_path("tools/make_synthetic.py", run_name="__main__")
    prompts = read_prompt_set(tmp_path / "prompts.jsonl")
    heldout = read_prompt_set(tmp_path / "heldout.jsonl")
    assert len(prompts) == 50 and {r.difficulty for r in heldout} == set(range(1, 7))
    assert not {r.prompt for r in prompts} & {r.prompt for r in heldout}
    assert all(is_heldout(r.prompt, 0.1) for r in heldout)
    assert len(read_sft_examples(tmp_path / "sft.jsonl")) == 40
    assert len(read_text_documents(tmp_path / "pretrain.txt")) == 30
    tok = load_tokenizer(tmp_path / "tokenizer")
    assert tok.decode(tok.encode("<answer>7</answer>", add_special_tokens=False)) == "<answer>7</answer>"
