"""How a prompt is shown to the model: raw text, or the user turn of a chat template (`data.chat_template`).

    none     <bos> (when the tokenizer has one) + the prompt text: the tiny world's format
    model    the checkpoint's own chat template (its tokenizer_config.json), e.g. Qwen2.5-Instruct's ChatML
    FILE     a Jinja file, e.g. a chat format for a base model

One ChatFormat serves SFT, RL rollouts, evaluation and curation, so the model sees the same prompt
ids in all of them:
    prompt_ids(tok, prompt)        the ids a response starts after (the template's generation prompt)
    example(tok, prompt, pieces)   SFT ids and labels: the loss is on the assistant turn only (its
                                   text and the template's end-of-turn token), never on the prompt
    stop_ids(tok)                  generation stops at </answer>, eos, or the template's end of turn
    response_text(tok, ids)        what the verifier reads: the response without a final eos / end of turn

Image prompts: `<image>` in a prompt's text marks where an image sits (k15.data.prompts puts one
before the text per image when a row has none). Raw, each marker becomes the model's own text for an
image (`image_text`: Qwen-VL's `<|vision_start|><|image_pad|><|vision_end|>`, LLaVA's `<image>`);
with a template, the user turn's content is a list of image and text parts, which the model's own
template renders. Either way the ids hold one image token per image, expanded later to the image's
token count (k15.data.vision_prompts).
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass
from pathlib import Path

from transformers import PreTrainedTokenizerBase

from k15.data.packing import IGNORE
from k15.errors import ConfigError
from k15.models.decoder import generation_eos
from k15.models.vlm import IMAGE_TOKEN
from k15.synthetic.traces import Piece
from k15.tokenizer import encode, prompt_ids, stop_token_ids

CHAT_MODES = ("none", "model")  # or a path to a Jinja file
_SENTINEL = "K15ASSISTANTTURN"  # stands in for a response, to find where the template puts it


@dataclass(frozen=True)
class ChatFormat:
    template: str | None = None  # Jinja source; None: raw prompts
    system_prompt: str | None = None
    # A transformers VLM's processor tokenizes the rendered chat with the tokenizer's special tokens, so
    # LLaVA's prompts start with <s> although its template does not write it (a text LM's
    # apply_chat_template adds none): set for such models by `chat_format_of(..., model)`.
    processor_bos: bool = False

    def messages(self, prompt: str, response: str | None = None, images: bool = False) -> list[dict]:
        turns = [{"role": "system", "content": self.system_prompt}] if self.system_prompt else []
        turns.append({"role": "user", "content": _content(prompt) if images else prompt})
        if response is not None:
            turns.append({"role": "assistant", "content": response})
        return turns

    def render(self, tok: PreTrainedTokenizerBase, prompt: str, response: str | None = None, images: bool = False) -> str:
        """The template's text: the generation prompt (response None) or the whole exchange."""
        return tok.apply_chat_template(
            self.messages(prompt, response, images), chat_template=self.template,
            add_generation_prompt=response is None, tokenize=False,
        )

    def prompt_ids(self, tok: PreTrainedTokenizerBase, prompt: str, image_text: str | None = None) -> list[int]:
        """`image_text` (a prompt with images; None: text, a literal `<image>` stays text): how the model
        writes one image in raw text; with a template, `<image>` markers become image parts instead."""
        if self.template is None:
            return prompt_ids(tok, prompt if image_text is None else prompt.replace(IMAGE_TOKEN, image_text))
        ids = encode(tok, self.render(tok, prompt, images=image_text is not None))  # the template writes <bos> where it wants
        if self.processor_bos and tok.bos_token_id is not None and ids[:1] != [tok.bos_token_id]:
            ids = [tok.bos_token_id] + ids
        return ids

    def end_of_turn(self, tok: PreTrainedTokenizerBase) -> tuple[list[int], int]:
        """The ids the template writes after an assistant response, and how many of them are trained:
        up to and including its end-of-turn token (ChatML: `<|im_end|>`, trained; the newline after it,
        never generated because generation stops there, is not)."""
        return _end_of_turn(self, tok)

    def _find_end_of_turn(self, tok: PreTrainedTokenizerBase) -> tuple[list[int], int]:
        # Only the text after the response is taken from the whole exchange: an SFT example is the
        # generation prompt + response + this, exactly what RL and evaluation see and continue. (Some
        # templates write the assistant turn differently from their generation prompt, e.g. R1-style
        # ones end the generation prompt with "<think>\n"; the model is trained as it is prompted.)
        full = self.render(tok, "1+1=", _SENTINEL)
        _, found, after = full.partition(_SENTINEL)
        if not found:
            raise ConfigError("data.chat_template: the template does not write the assistant's response "
                              "(rendered with a test response, it is missing); use another template")
        ids = encode(tok, after)
        specials = set(tok.all_special_ids) | set(stop_token_ids(tok))
        trained = next((i + 1 for i, t in enumerate(ids) if t in specials), len(ids))
        return ids, trained

    def example(self, tok: PreTrainedTokenizerBase, prompt: str, response: list[Piece]) -> tuple[list[int], list[int]]:
        """input_ids and labels of one SFT example; labels are IGNORE on the prompt and on pieces not trained on."""
        ids = self.prompt_ids(tok, prompt)
        labels = [IGNORE] * len(ids)
        for piece in response:
            piece_ids = encode(tok, piece.text)
            ids += piece_ids
            labels += piece_ids if piece.trained else [IGNORE] * len(piece_ids)
        if self.template is not None:
            tail, trained = self.end_of_turn(tok)
            ids += tail
            labels += tail[:trained] + [IGNORE] * (len(tail) - trained)
        return ids, labels

    def stop_ids(self, tok: PreTrainedTokenizerBase, model=None) -> list[int]:
        """</answer> and eos, the template's end of turn, and the model's own end-of-sequence ids
        (its generation_config: Qwen2.5-Instruct ends with <|im_end|> or <|endoftext|>)."""
        ids = stop_token_ids(tok)
        if self.template is not None:
            tail, trained = self.end_of_turn(tok)
            if trained:
                ids.append(tail[trained - 1])
        ids += generation_eos(model) if model is not None else []
        return list(dict.fromkeys(ids))  # in order, once each

    def response_text(self, tok: PreTrainedTokenizerBase, ids: list[int]) -> str:
        """The response as the verifier reads it: a final special token (eos, end of turn, a model's other
        end-of-text) is not part of the answer (`#### 72<|im_end|>` is a complete GSM8K answer), while
        `</answer>` closes the answer block and stays."""
        if ids and ids[-1] in _enders(self, tok):
            ids = ids[:-1]
        return tok.decode(ids)


def _content(prompt: str) -> str | list[dict]:
    """A user turn's content: the text, or (with `<image>` markers) image and text parts in reading order."""
    if IMAGE_TOKEN not in prompt:
        return prompt
    parts: list[dict] = []
    for j, text in enumerate(prompt.split(IMAGE_TOKEN)):
        if j:
            parts.append({"type": "image"})
        if text:
            parts.append({"type": "text", "text": text})
    return parts


def image_text(tok: PreTrainedTokenizerBase, model) -> str:
    """How one image is written in a raw prompt for `model`: its image token, inside the family's marks
    (Qwen-VL's vision start / end: k15.models.hf_vlm.image_marks; k15's own VLM has none)."""
    before, after = getattr(model, "image_marks", ((), ()))
    return "".join(tok.convert_ids_to_tokens([*before, model.image_token_id, *after]))


@functools.lru_cache(maxsize=16)  # rendered once per format and tokenizer, not once per example
def _end_of_turn(fmt: ChatFormat, tok: PreTrainedTokenizerBase) -> tuple[list[int], int]:
    return fmt._find_end_of_turn(tok)


@functools.lru_cache(maxsize=16)  # response_text runs once per sample
def _enders(fmt: ChatFormat, tok: PreTrainedTokenizerBase) -> frozenset[int]:
    return (frozenset(fmt.stop_ids(tok)) | frozenset(tok.all_special_ids)) - frozenset(tok.convert_tokens_to_ids(["</answer>"]))


RAW = ChatFormat()


def chat_format(mode: str, system_prompt: str | None, tok: PreTrainedTokenizerBase) -> ChatFormat:
    """The ChatFormat that `data.chat_template` / `data.system_prompt` name, checked by rendering one prompt."""
    if mode == "none":
        if system_prompt:
            raise ConfigError("data.system_prompt needs a chat template (data.chat_template=model or a Jinja file)")
        return RAW
    if mode == "model":
        template = tok.chat_template
        if isinstance(template, dict):  # several named templates: the default one
            template = template.get("default")
        if not template:
            raise ConfigError(
                f"data.chat_template=model, but the tokenizer in {tok.name_or_path or '?'} has no chat template; "
                "use data.chat_template=none or a Jinja file"
            )
    else:
        path = Path(mode)
        if not path.is_file():
            raise ConfigError(f"data.chat_template must be none, model or a Jinja file; {mode} is none of these")
        template = path.read_text(encoding="utf-8")
    fmt = ChatFormat(template, system_prompt or None)
    try:
        fmt.render(tok, "1+1=")
        fmt.end_of_turn(tok)
    except ConfigError:
        raise
    except Exception as exc:  # noqa: BLE001 -- jinja2 syntax or runtime errors, with their line
        raise ConfigError(f"data.chat_template={mode}: the template does not render: {str(exc).splitlines()[0]}") from None
    return fmt


def chat_format_of(data_cfg, tok: PreTrainedTokenizerBase, model=None) -> ChatFormat:
    """chat_format for a config's `data` section; with `model` a transformers VLM whose tokenizer adds a
    <bos>, prompts start with it as the model's processor writes them (`processor_bos`)."""
    fmt = chat_format(data_cfg.chat_template, data_cfg.system_prompt, tok)
    from k15.models.hf_vlm import HFVisionLanguageModel

    if fmt.template is not None and isinstance(model, HFVisionLanguageModel) and tok.bos_token_id is not None \
            and tok("x")["input_ids"][:1] == [tok.bos_token_id]:
        fmt = dataclasses.replace(fmt, processor_bos=True)
    return fmt
