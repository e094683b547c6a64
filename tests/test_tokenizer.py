from k15.tokenizer import build_synthetic_tokenizer, load_tokenizer, prompt_ids, stop_token_ids


def test_round_trip_and_one_token_per_digit(tmp_path):
    tok = build_synthetic_tokenizer()
    text = "7-2+4-1=<think>3:7-2=5,5+4=7 wait 5+4=9</think><answer>8</answer>"
    ids = tok.encode(text, add_special_tokens=False)
    assert tok.decode(ids) == text
    assert len(tok.encode("0123456789", add_special_tokens=False)) == 10
    for special in ("<think>", "</think>", "<answer>", "</answer>", "<image>", "wait"):
        assert len(tok.encode(special, add_special_tokens=False)) == 1


def test_saved_in_hf_format_and_reloads_identically(tmp_path):
    tok = build_synthetic_tokenizer()
    tok.save_pretrained(tmp_path)
    again = load_tokenizer(tmp_path)
    text = "9-3=<answer>6</answer>"
    assert again.encode(text, add_special_tokens=False) == tok.encode(text, add_special_tokens=False)
    assert len(again) == len(tok)
    assert stop_token_ids(again) == stop_token_ids(tok)
    assert prompt_ids(again, "1+1=")[0] == again.bos_token_id


def test_missing_tokenizer_dir_is_a_clear_error(tmp_path):
    import pytest

    from k15.errors import CheckpointError

    with pytest.raises(CheckpointError, match="not found"):
        load_tokenizer(tmp_path / "nope")


def test_characters_map_to_their_one_token_even_when_spelled_apart():
    from k15.tokenizer import char_token_ids

    tok = build_synthetic_tokenizer()
    assert tok.convert_ids_to_tokens(char_token_ids(tok, "7 ")) == ["7", "Ġ"]  # byte-level spelling of the space
    assert tok.decode(char_token_ids(tok, "  7-2")) == "  7-2"
    assert char_token_ids(tok, "A\n") == [None, None]  # outside the alphabet: no token of their own
