"""Chat formats: the same prompt ids in SFT, RL rollouts and evaluation, the loss on the assistant turn only."""

import pytest
from transformers import AutoTokenizer

from k15.chat import RAW, chat_format
from k15.config import RLConfig
from k15.data.packing import IGNORE
from k15.data.prompts import PromptRecord
from k15.errors import ConfigError
from k15.models.decoder import load_model_and_tokenizer
from k15.config import ModelConfig
from k15.modules.rl import RLModule
from k15.synthetic.traces import Piece
from k15.tokenizer import build_synthetic_tokenizer, encode

SYSTEM = "Please reason step by step, and put your final answer within \\boxed{}."
CHATML = ("{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
          "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def test_rollout_prompt_ids_equal_apply_chat_template(tiny_qwen2):
    model, tok = load_model_and_tokenizer(ModelConfig(), tiny_qwen2)
    chat = chat_format("model", SYSTEM, tok)
    record = PromptRecord("a", "What is $1+2$?", "3", None, "math")
    module = RLModule(model, tok, [record], RLConfig(prompts_per_iteration=1), max_seq_len=256, seed=0, chat=chat)
    expected = tok.apply_chat_template([{"role": "system", "content": SYSTEM}, {"role": "user", "content": record.prompt}],
                                       add_generation_prompt=True, return_dict=False)
    assert module.prompt_tokens(0) == list(expected)
    assert tok.decode(module.prompt_tokens(0)).endswith("<|im_start|>assistant\n")
    # generation stops at the end of the assistant turn, which the verifier does not see
    im_end = tok.convert_tokens_to_ids("<|im_end|>")
    assert im_end in module.sampling_params().stop_token_ids
    assert chat.response_text(tok, encode(tok, "so \\boxed{3}") + [im_end]) == "so \\boxed{3}"


def test_sft_example_trains_the_assistant_turn_and_its_end_only(tiny_qwen2):
    _, tok = load_model_and_tokenizer(ModelConfig(), tiny_qwen2)
    chat = chat_format("model", None, tok)
    ids, labels = chat.example(tok, "What is $1+2$?", [Piece("It is "), Piece("4", trained=False), Piece("\\boxed{3}")])
    prompt = chat.prompt_ids(tok, "What is $1+2$?")
    assert ids[: len(prompt)] == prompt and labels[: len(prompt)] == [IGNORE] * len(prompt)
    whole = tok.apply_chat_template([{"role": "user", "content": "What is $1+2$?"},
                                     {"role": "assistant", "content": "It is 4\\boxed{3}"}], tokenize=False)
    assert tok.decode(ids) == whole  # the whole exchange, exactly as the template writes it
    trained = [t for t, lab in zip(ids, labels) if lab != IGNORE]
    assert tok.decode(trained) == "It is \\boxed{3}<|im_end|>"  # not the untrained piece, not the newline after


def test_a_jinja_file_and_raw_prompts(tmp_path, tiny_qwen2):
    _, tok = load_model_and_tokenizer(ModelConfig(), tiny_qwen2)
    (tmp_path / "chatml.jinja").write_text(CHATML)
    chat = chat_format(str(tmp_path / "chatml.jinja"), None, tok)
    assert tok.decode(chat.prompt_ids(tok, "hi")) == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    synthetic = build_synthetic_tokenizer()
    assert chat_format("none", None, synthetic) is RAW
    assert RAW.prompt_ids(synthetic, "1+2=") == [synthetic.bos_token_id, *encode(synthetic, "1+2=")]


@pytest.mark.parametrize("mode, system, message", [
    ("model", None, "has no chat template"),
    ("nope.jinja", None, "must be none, model or a Jinja file"),
    ("none", "be brief", "data.system_prompt needs a chat template"),
    ("bad.jinja", None, "the template does not render"),
])
def test_chat_template_errors_are_one_line(tmp_path, monkeypatch, mode, system, message):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "bad.jinja").write_text("{% for m in messages %}{{ m.content }")
    with pytest.raises(ConfigError, match=message):
        chat_format(mode, system, build_synthetic_tokenizer())


def test_llama3_template_ends_its_turn_with_eot(tmp_path):
    from tools.make_tiny_checkpoint import make_tiny_checkpoint

    tok = AutoTokenizer.from_pretrained(make_tiny_checkpoint(tmp_path / "llama", family="llama"))
    chat = chat_format("model", None, tok)
    ids, labels = chat.example(tok, "hi", [Piece("5")])
    assert tok.decode([t for t, lab in zip(ids, labels) if lab != IGNORE]) == "5<|eot_id|>"
    assert tok.convert_tokens_to_ids("<|eot_id|>") in chat.stop_ids(tok)
    first, second = chat.prompt_ids(tok, "hi")[:2]
    assert first == tok.bos_token_id and second != tok.bos_token_id  # the template writes <|begin_of_text|>, once


def test_a_template_whose_generation_prompt_opens_the_thinking(tiny_qwen2, tmp_path):
    """R1-style templates end the generation prompt with "<think>" and a newline, which the rendered exchange does not
    hold: SFT trains the response after exactly the prompt RL and evaluation continue from."""
    _, tok = load_model_and_tokenizer(ModelConfig(), tiny_qwen2)
    r1 = ("{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
          "{% if add_generation_prompt %}<|im_start|>assistant\n<think>\n{% endif %}")
    (tmp_path / "r1.jinja").write_text(r1)
    chat = chat_format(str(tmp_path / "r1.jinja"), None, tok)
    prompt = chat.prompt_ids(tok, "hi")
    ids, labels = chat.example(tok, "hi", [Piece("so</think> \\boxed{1}")])
    assert tok.decode(prompt).endswith("<|im_start|>assistant\n<think>\n") and ids[: len(prompt)] == prompt
    assert tok.decode([t for t, lab in zip(ids, labels) if lab != IGNORE]) == "so</think> \\boxed{1}<|im_end|>"
