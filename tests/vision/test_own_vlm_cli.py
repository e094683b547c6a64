"""experiments/vision_rl as a researcher runs it: a local Qwen2.5-VL, LLaVA, Mistral3 or Pixtral-LLaVA checkpoint
(tiny, random init, written by tools/make_tiny_vlm_checkpoint.py: its own tokenizer, chat template and image
processor; Mistral3 / Pixtral-LLaVA write images in PixtralProcessor's rows), an
image prompt set with embedded images (Parquet, geometry-QA fields), k1.5 RL -> held-out eval from the
command line on CPU; the trained model exports in its family's format and reloads with transformers."""

import json

import pytest
import torch
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from transformers import AutoModelForImageTextToText, AutoTokenizer

from experiments.run import main
from k15.errors import CheckpointError
from k15.models.hf_vlm import load_hf_vlm
from k15.models.policy import model_kind
from tests.conftest import PROMPT_SETS
from tools.make_tiny_vlm_checkpoint import make_tiny_vlm_checkpoint

GEOMETRY = PROMPT_SETS / "geometry_tiny.parquet"
SHAPES = PROMPT_SETS / "shapes_tiny.jsonl"


def tb_tags(tb_dir) -> dict[str, list[str]]:
    events = EventAccumulator(str(tb_dir), size_guidance={"images": 0})
    events.Reload()
    return events.Tags()


def vision_rl_args(ckpt, run, *extra: str) -> list[str]:
    """experiments/vision_rl on the geometry Parquet set at a size that runs in seconds: 2 iterations of 2 x 2."""
    return [
        "vision_rl", f"model.init_from={ckpt}", f"rl.prompt_path={GEOMETRY}", f"eval.prompt_path={GEOMETRY}",
        "data.answer_from=boxed", "trainer=cpu", "run.threads=1", f"run.dir={run}", "model.max_seq_len=256",
        "rl.iterations=2", "rl.prompts_per_iteration=2", "rl.samples_per_prompt=2", "rl.max_new_tokens=12",
        "rl.minibatches=1", "rl.lr=1e-3", "eval.max_new_tokens=12", "eval.samples_per_problem=2", "eval.pass_k=[1,2]",
        "eval.batch_size=8", "trainer.progress=false", *extra,
    ]


@pytest.mark.parametrize("family", ["qwen2_5_vl", "llava", "mistral3", "llava_pixtral"])
def test_vision_rl_from_the_command_line(tmp_path, family, capsys):
    ckpt = make_tiny_vlm_checkpoint(tmp_path / "ckpt", family)
    run = tmp_path / "run"
    code = main(vision_rl_args(ckpt, run))
    assert code == 0, capsys.readouterr().err[-2000:]
    summary = json.loads((run / "summary.json").read_text())
    for name in ("init", "rl"):  # every sample of every held-out image prompt scored by the math verifier
        result = summary["eval"][name]
        assert sum(result["verdicts"].values()) == 4 * 2 and 0.0 <= result["pass@1"] <= result["pass@2"] <= 1.0
    # TensorBoard shows the logged rollouts' images next to their text
    tags = tb_tags(run / "tb" / "rl")
    assert "rollouts/sample0_image0" in tags["images"] and "rl/loss" in tags["scalars"]
    # the trained model is a checkpoint of its own family again: transformers reloads it, its processor and
    # chat template travel with it, and our wrapper computes the same logits as transformers on an image prompt
    export = run / "rl" / "model"
    assert model_kind(export) == "hf_vlm" and (export / "preprocessor_config.json").is_file()
    hf = AutoModelForImageTextToText.from_pretrained(export).eval()
    assert hf.config.model_type == family.removesuffix("_pixtral")
    assert AutoTokenizer.from_pretrained(export).chat_template == AutoTokenizer.from_pretrained(ckpt).chat_template
    ours = load_hf_vlm(export).eval()
    image = Image.new("RGB", (40, 24), (200, 30, 30))
    ids, pixels = ours.expand_prompt([3, 4, ours.image_token_id, 5], [image])
    if family in ("mistral3", "llava_pixtral"):  # the export keeps the checkpoint's rows of [IMG] / [IMG_BREAK]
        tok = AutoTokenizer.from_pretrained(export)
        assert ours.image_rows == tuple(tok.convert_tokens_to_ids(["[IMG_BREAK]", "[IMG_END]"]))
        assert ids.count(ours.image_rows[0]) == pixels[0].shape[-2] // (8 * ours.merge) - 1 >= 1
    ids = torch.tensor([ids])
    with torch.no_grad():
        mine = ours(ids, images=pixels).logits
        theirs = hf(**{k: v for k, v in ours.model_inputs(ids, pixels).items() if v is not None}).logits
    assert torch.equal(mine, theirs)


def test_jsonl_image_prompts_with_paths_and_another_field_mapping(tmp_path):
    """Several images per prompt, paths relative to the file, the user's own field names."""
    ckpt = make_tiny_vlm_checkpoint(tmp_path / "ckpt", "qwen2_5_vl")
    run = tmp_path / "run"
    code = main([
        "vision_rl", f"model.init_from={ckpt}", f"rl.prompt_path={SHAPES}", f"eval.prompt_path={SHAPES}",
        "data.prompt_field=question", "data.id_field=qid", "data.difficulty_field=grade", "stages=[eval]",
        "eval.models=[init]", "trainer=cpu", "run.threads=1", f"run.dir={run}", "model.max_seq_len=256",
        "eval.max_new_tokens=8", "eval.samples_per_problem=1", "eval.pass_k=[1]", "trainer.progress=false",
    ])
    assert code == 0
    result = json.loads((run / "summary.json").read_text())["eval"]["init"]
    assert result["group_by"] == "difficulty" and sum(result["verdicts"].values()) == len(SHAPES.read_text().splitlines())


def test_an_unsupported_vision_language_family_is_one_line(tmp_path, capsys):
    ckpt = make_tiny_vlm_checkpoint(tmp_path / "ckpt", "llava")
    config = json.loads((ckpt / "config.json").read_text())
    config["model_type"], config["architectures"] = "idefics3", ["Idefics3ForConditionalGeneration"]
    (ckpt / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="model type 'idefics3'.*supported vision-language families: llava, "
                                              "mistral3, qwen2_vl, qwen2_5_vl"):
        model_kind(ckpt)
    code = main(["vision_rl", f"model.init_from={ckpt}", f"rl.prompt_path={GEOMETRY}", f"eval.prompt_path={GEOMETRY}",
                 "trainer=cpu", f"run.dir={tmp_path / 'run'}"])
    err = capsys.readouterr().err
    assert code == 2 and "model type 'idefics3'" in err and not (tmp_path / "run").exists()


def test_every_stage_runs_on_a_transformers_vlm(tmp_path, capsys):
    """SFT (text conversations), the joint vision stage, RL on image prompts, merge and long2short RL, eval:
    each loads the Qwen2.5-VL checkpoint (or the previous stage's export of it) and exports one again."""
    ckpt = make_tiny_vlm_checkpoint(tmp_path / "ckpt", "qwen2_5_vl")
    common = ["trainer=cpu", "run.threads=1", "trainer.progress=false", "model.max_seq_len=256"]
    sft = tmp_path / "sft"
    assert main(["vision_rl", f"model.init_from={ckpt}", f"rl.prompt_path={GEOMETRY}", f"eval.prompt_path={GEOMETRY}",
                 "stages=[sft]", f"sft.data_path={PROMPT_SETS / 'sft_tiny.jsonl'}", "data.prompt_field=prompt",
                 "data.response_field=response", "sft.max_steps=2", "sft.batch_size=4", f"run.dir={sft}", *common]) == 0
    joint = tmp_path / "joint"
    assert main(["quickstart_vision", f"model.init_from={sft / 'sft' / 'model'}", "stages=[vision_joint]",
                 "vision_joint.max_steps=2", f"run.dir={joint}", *common]) == 0
    run = tmp_path / "run"
    assert main(["vision_rl", f"model.init_from={joint / 'vision_joint' / 'model'}", f"rl.prompt_path={GEOMETRY}",
                 f"eval.prompt_path={GEOMETRY}", "data.answer_from=boxed", "stages=[rl,merge,l2s_rl,eval]",
                 f"long2short.short_model={ckpt}", "eval.models=[init,rl,merge,l2s_rl]", "rl.iterations=1",
                 "rl.prompts_per_iteration=2", "rl.samples_per_prompt=2", "rl.max_new_tokens=8",
                 "long2short.rl_iterations=1", "long2short.rl_max_new_tokens=8", "eval.max_new_tokens=8",
                 "eval.samples_per_problem=1", "eval.pass_k=[1]", f"run.dir={run}", *common]) == 0
    for stage in ("rl", "merge", "l2s_rl"):
        assert AutoModelForImageTextToText.from_pretrained(run / stage / "model").config.model_type == "qwen2_5_vl"
    assert set(json.loads((run / "summary.json").read_text())["eval"]) == {"init", "rl", "merge", "l2s_rl"}
    # shortest-of-n SFT and DPO train on text only: image prompts are refused in one line
    code = main(["vision_rl", f"model.init_from={ckpt}", f"rl.prompt_path={GEOMETRY}", f"eval.prompt_path={GEOMETRY}",
                 "data.answer_from=boxed", "stages=[dpo]", f"long2short.long_model={ckpt}", f"run.dir={tmp_path / 'dpo'}",
                 *common])
    assert code == 2 and "shortest_rs and dpo train on text prompts only" in capsys.readouterr().err
    assert not (tmp_path / "dpo").exists()  # refused before the run directory exists


def test_the_export_holds_the_trained_weights(tmp_path):
    """What export_policy writes is the model in memory (changed from the checkpoint), reloaded by transformers."""
    from k15.models.policy import export_policy, load_policy
    from k15.config import ModelConfig

    ckpt = make_tiny_vlm_checkpoint(tmp_path / "ckpt", "qwen2_5_vl")
    model, tok = load_policy(ModelConfig(), ckpt)
    with torch.no_grad():  # stands in for training
        for p in model.parameters():
            p.add_(0.01 * torch.randn_like(p))
    export_policy(model, tok, tmp_path / "export")
    hf = AutoModelForImageTextToText.from_pretrained(tmp_path / "export").eval()
    model.eval()
    ids, pixels = model.expand_prompt([3, 4, model.image_token_id, 5], [Image.new("RGB", (40, 24), (9, 90, 200))])
    ids = torch.tensor([ids])
    with torch.no_grad():
        mine = model(ids, images=pixels).logits
        theirs = hf(**{k: v for k, v in model.model_inputs(ids, pixels).items() if v is not None}).logits
        start = AutoModelForImageTextToText.from_pretrained(ckpt, dtype=torch.float32).eval()
        before = start(**{k: v for k, v in model.model_inputs(ids, pixels).items() if v is not None}).logits
    assert torch.equal(mine, theirs) and not torch.equal(mine, before)
    # the checkpoint's processor files travel as they came
    for name in ("preprocessor_config.json", "chat_template.jinja"):
        assert (tmp_path / "export" / name).read_text() == (ckpt / name).read_text()


def test_image_prompts_too_long_or_sharded_runs_are_refused_before_the_run_directory(tmp_path, capsys):
    ckpt = make_tiny_vlm_checkpoint(tmp_path / "ckpt", "qwen2_5_vl")
    args = ["vision_rl", f"model.init_from={ckpt}", f"rl.prompt_path={GEOMETRY}", f"eval.prompt_path={GEOMETRY}",
            "trainer=cpu", f"run.dir={tmp_path / 'run'}", "rl.max_new_tokens=12", "eval.max_new_tokens=12"]
    # the images count as the tokens the checkpoint's processor makes of them, read without the weights
    assert main([*args, "model.max_seq_len=100"]) == 2
    err = capsys.readouterr().err
    assert "geometry_tiny.parquet: prompt" in err and "it exceeds model.max_seq_len=100" in err
    assert main([*args, "model.max_seq_len=256", "trainer.strategy=fsdp2", "trainer.devices=2"]) == 2
    assert "does not shard transformers vision-language models yet" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_qwen_documents_in_the_vision_stages_wrap_images_as_its_template_does(tmp_path):
    from k15.data.mixture import tokenize_document
    from k15.data.shards import Document

    model = load_hf_vlm(make_tiny_vlm_checkpoint(tmp_path / "ckpt", "qwen2_5_vl"))
    tok = AutoTokenizer.from_pretrained(tmp_path / "ckpt")
    image = Image.new("RGB", (32, 32), (200, 0, 0))
    doc = Document(key="d", kind="caption", segments=["a red square: ", image, " done"])
    ids, labels, pixels = tokenize_document(doc, tok, model.image_processor(), model.tokens_per_image,
                                            model.image_token_id, image_marks=model.image_marks)
    n = model.tokens_per_image(*pixels[0].shape[-2:])
    text = tok.convert_ids_to_tokens(ids)
    first = text.index("<|vision_start|>")
    assert text[first: first + n + 2] == ["<|vision_start|>", *["<|image_pad|>"] * n, "<|vision_end|>"]
    assert all(labels[i] == -100 for i in range(first, first + n + 2))
