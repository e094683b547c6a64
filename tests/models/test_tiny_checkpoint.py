"""tools/make_tiny_checkpoint.py writes a directory that loads like a real Qwen2.5 / Llama-3 download."""

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from k15.models.checkpoint_dir import check_model_dir
from k15.tokenizer import load_tokenizer
from tools.make_tiny_checkpoint import default_corpus, main, make_tiny_checkpoint

QUESTION = [{"role": "user", "content": "What is 2+3?"}]
EXPECTED_PROMPT = {
    "qwen2": "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
             "<|im_start|>user\nWhat is 2+3?<|im_end|>\n<|im_start|>assistant\n",
    "llama": "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nYou are a helpful assistant.<|eot_id|>"
             "<|start_header_id|>user<|end_header_id|>\n\nWhat is 2+3?<|eot_id|>"
             "<|start_header_id|>assistant<|end_header_id|>\n\n",
}


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.mark.parametrize("family", ["qwen2", "llama"])
def test_loads_with_auto_classes_chats_and_generates(tmp_path, family):
    path = make_tiny_checkpoint(tmp_path / family, family)
    check_model_dir(path)  # every part k15 expects is there
    model = AutoModelForCausalLM.from_pretrained(path, local_files_only=True).eval()
    tok = AutoTokenizer.from_pretrained(path, local_files_only=True)
    assert type(model).__name__ == ("Qwen2ForCausalLM" if family == "qwen2" else "LlamaForCausalLM")
    assert model.config.max_position_embeddings >= 512 and model.config.num_hidden_layers == 2
    assert model.get_input_embeddings().weight.shape[0] >= len(tok)
    assert tok.apply_chat_template(QUESTION, add_generation_prompt=True, tokenize=False) == EXPECTED_PROMPT[family]
    if family == "qwen2":  # Qwen2.5-Instruct: eos is the end of turn, pad the end of text, no bos
        assert (tok.eos_token, tok.pad_token, tok.bos_token) == ("<|im_end|>", "<|endoftext|>", None)
        ends = [tok.convert_tokens_to_ids(t) for t in ("<|im_end|>", "<|endoftext|>")]
        assert model.generation_config.eos_token_id == ends
    else:  # Llama-3-Instruct: bos added when encoding, eos <|eot_id|>, no pad
        assert (tok.bos_token, tok.eos_token, tok.pad_token) == ("<|begin_of_text|>", "<|eot_id|>", None)
        assert tok.encode("hi")[0] == tok.bos_token_id
        assert load_tokenizer(path).pad_token == "<|eot_id|>"  # k15 pads with eos when there is no pad token
    inputs = tok.apply_chat_template(QUESTION, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=5, do_sample=False)
    assert out.shape[1] > inputs["input_ids"].shape[1]
    text = "Mia has 123 apples \u2014 $\\frac{3}{4}$, na\u00efve\n\t\U0001F600"  # every byte is in a byte-level alphabet
    assert tok.decode(tok.encode(text, add_special_tokens=False)) == text


def test_same_seed_same_files_other_seed_other_weights(tmp_path):
    a = make_tiny_checkpoint(tmp_path / "a", "qwen2", seed=3)
    b = make_tiny_checkpoint(tmp_path / "b", "qwen2", seed=3)
    c = make_tiny_checkpoint(tmp_path / "c", "qwen2", seed=4)
    for name in ("model.safetensors", "tokenizer.json", "tokenizer_config.json", "config.json"):
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    assert (a / "model.safetensors").read_bytes() != (c / "model.safetensors").read_bytes()


def test_own_corpus_vocab_size_no_template_and_cli(tmp_path, capsys):
    texts = default_corpus(seed=1, n=50) + ["xylophone"] * 500
    path = make_tiny_checkpoint(tmp_path / "own", "llama", texts=texts, vocab_size=300, chat_template=False)
    tok = AutoTokenizer.from_pretrained(path)
    assert len(tok) <= 300 and AutoModelForCausalLM.from_pretrained(path).config.vocab_size == 300
    assert tok.chat_template is None
    assert tok.tokenize("xylophone") == ["xylophone"]  # learned from the given texts
    main([str(tmp_path / "cli"), "--family", "qwen2", "--vocab-size", "400"])
    assert "model.init_from=" in capsys.readouterr().out
    check_model_dir(tmp_path / "cli")
    with pytest.raises(ValueError, match="family must be one of qwen2, llama"):
        make_tiny_checkpoint(tmp_path / "x", "gpt2")
