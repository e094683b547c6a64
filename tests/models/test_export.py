"""Every stage exports with save_pretrained; transformers must load it back with identical logits."""

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from k15.config import ModelConfig
from k15.errors import CheckpointError
from k15.models.decoder import build_decoder, export, load_model_and_tokenizer
from k15.tokenizer import build_synthetic_tokenizer


@pytest.mark.parametrize("family, kv_heads, tied", [("llama", 4, True), ("qwen2", 2, False)])
def test_export_reloads_with_identical_logits(tmp_path, family, kv_heads, tied):
    torch.manual_seed(0)
    tok = build_synthetic_tokenizer()
    cfg = ModelConfig(family=family, hidden_size=32, num_layers=2, num_heads=4, num_kv_heads=kv_heads,
                      intermediate_size=64, max_seq_len=64, tie_embeddings=tied)
    model = build_decoder(cfg, tok).eval()
    with torch.no_grad():  # move the weights off their init so a silent re-init would show
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    export(model, tok, tmp_path)
    again = AutoModelForCausalLM.from_pretrained(tmp_path, local_files_only=True).eval()
    ids = torch.tensor([tok.encode("3+4-2=<think>2:3+4=7", add_special_tokens=False)])
    with torch.no_grad():
        assert torch.equal(model(ids).logits, again(ids).logits)
    assert AutoTokenizer.from_pretrained(tmp_path).encode("3+4=") == tok.encode("3+4=")
    loaded, loaded_tok = load_model_and_tokenizer(cfg, tmp_path)
    with torch.no_grad():
        assert torch.equal(loaded.eval()(ids).logits, model(ids).logits)


def test_missing_model_dir_and_vocab_mismatch_are_clear_errors(tmp_path):
    with pytest.raises(CheckpointError, match=f"^init_from={tmp_path}: no config.json in {tmp_path}$"):
        load_model_and_tokenizer(ModelConfig(), tmp_path)
    tok = build_synthetic_tokenizer()
    small = ModelConfig(hidden_size=32, num_layers=1, num_heads=2, num_kv_heads=2, intermediate_size=32)
    model = build_decoder(small, tok)
    model.resize_token_embeddings(10)
    export(model, tok, tmp_path)
    with pytest.raises(CheckpointError, match="embeds only 10"):
        load_model_and_tokenizer(small, tmp_path)
