"""The catalogue of bad inputs: each ends with one line naming the problem, exit status 2, no
traceback (unless --debug), and every earlier run directory left exactly as it was."""

import hashlib
import json
from pathlib import Path

import pytest

from experiments.run import main
from k15.config import ModelConfig
from k15.models.decoder import build_decoder, export
from k15.models.projector import ProjectorConfig
from k15.models.vision import VisionConfig
from k15.models.vlm import build_vlm, save_vlm
from k15.tokenizer import build_synthetic_tokenizer
from tests.tiny import TINY, VISION_SMOKE

SFT_ONLY = [o for o in TINY if not o.startswith("stages=")] + ["stages=[sft]", "run.threads=1"]
RL_ONLY = [o for o in TINY if not o.startswith("stages=")] + ["stages=[rl]", "run.threads=1", "rl.max_new_tokens=20"]


def snapshot(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def earlier_run(tmp_path_factory) -> Path:
    """A finished run, which no later bad invocation may touch."""
    root = tmp_path_factory.mktemp("earlier")
    assert main(["quickstart", *SFT_ONLY, "sft.max_steps=2", f"run.dir={root / 'run'}"]) == 0
    return root / "run"


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("inputs")
    good = {"id": "a", "prompt": "1+1=", "answer": "2", "difficulty": 1, "domain": "arithmetic"}
    (root / "malformed.jsonl").write_text(json.dumps(good) + "\n{broken\n")
    (root / "no_answer.jsonl").write_text(json.dumps({k: v for k, v in good.items() if k != "answer"}) + "\n")
    (root / "empty_model").mkdir()
    tok = build_synthetic_tokenizer()
    small = build_decoder(ModelConfig(hidden_size=16, num_layers=1, num_heads=2, num_kv_heads=2, intermediate_size=16), tok)
    small.resize_token_embeddings(20)
    export(small, tok, root / "small_vocab_model")
    text = build_decoder(ModelConfig(hidden_size=16, num_layers=1, num_heads=2, num_kv_heads=2, intermediate_size=16,
                                     max_seq_len=64), tok)
    export(text, tok, root / "text_model")
    vlm = build_vlm(ModelConfig(hidden_size=16, num_layers=1, num_heads=2, num_kv_heads=2, intermediate_size=16,
                                max_seq_len=64), tok, VisionConfig(hidden_size=16, intermediate_size=16),
                    ProjectorConfig(kind="embedding_softmax"))
    save_vlm(vlm, tok, root / "vlm_model")
    image_row = {**good, "prompt": "<image>", "images": ["missing.png"]}
    (root / "missing_image.jsonl").write_text(json.dumps(image_row) + "\n")
    (root / "two_placeholders.jsonl").write_text(json.dumps({**image_row, "prompt": "<image><image>"}) + "\n")
    (root / "gsm8k.jsonl").write_text(json.dumps({"question": "q", "answer": "so\n#### 3"}) + "\n"
                                      + json.dumps({"query": "q2", "answer": "#### 4"}) + "\n")
    (root / "no_gold.jsonl").write_text("".join(json.dumps({"prompt": f"{i}+1=", "answer": "no hashes"}) + "\n" for i in range(3)))
    (root / "unlabelled.jsonl").write_text("".join(json.dumps({"prompt": f"{i}+1=", "answer": str(i + 1)}) + "\n" for i in range(9)))
    (root / "long_prompt.jsonl").write_text(json.dumps({"prompt": "1+" * 30 + "1=", "answer": "31"}) + "\n")
    (root / "uppercase.jsonl").write_text(json.dumps({"prompt": "What is 1+1?", "answer": "2"}) + "\n")
    (root / "bad_shards").mkdir()
    (root / "bad_shards" / "ocr-000000.tar").write_bytes(b"not a tar file" * 100)
    return {p.stem: p for p in root.iterdir()}


CASES = {
    "unknown key": (["quickstart", "rl.iteratons=3"], "unknown config key 'rl.iteratons'"),
    "wrong type": (["quickstart", "rl.samples_per_prompt=eight"], "expects int"),
    "unknown experiment": (["quikstart"], "unknown experiment 'quikstart'"),
    "k = 0": (["quickstart", "rl.samples_per_prompt=0"], "rl.samples_per_prompt must be > 0"),
    "negative budget": (["quickstart", "rl.partial.budget=-4"], "rl.partial.budget"),
    "missing SFT file": (["quickstart", *SFT_ONLY, "sft.data_path={tmp}/nope.jsonl"], "sft.data_path: not found: {tmp}/nope.jsonl"),
    "missing RL prompt file": (["quickstart", "rl.prompt_path={tmp}/nope.parquet"], "rl.prompt_path: not found: {tmp}/nope.parquet"),
    "missing eval prompt file": (["quickstart", "eval.prompt_path={tmp}/held.jsonl"], "eval.prompt_path: not found: {tmp}/held.jsonl"),
    "row without the mapped field": (["quickstart", "rl.prompt_path={gsm8k}", "data.prompt_field=question",
                                      "data.answer_from=gsm8k"], "gsm8k.jsonl:2: field 'question' is missing (set data.prompt_field"),
    "no gold answer": (["quickstart", "rl.prompt_path={no_gold}", "data.answer_from=gsm8k"],
                       "found no gold answer in field 'answer' of 3 of 3 rows"),
    "curriculum without difficulty": (["quickstart", "rl.prompt_path={unlabelled}", "rl.sampling.curriculum=paper",
                                       "rl.prompts_per_iteration=4"], "9 of 9 prompts have none: map a difficulty field"),
    "text the tokenizer cannot represent": (["quickstart", "rl.prompt_path={uppercase}"], "cannot represent 'W'"),
    "RL prompt without room to answer": (["quickstart", "rl.prompt_path={long_prompt}"],  # <bos> + 31 ones, 30 pluses, =
                                         "has 63 tokens; with rl.max_new_tokens=96 it exceeds model.max_seq_len=128"),
    "eval prompt without room to answer": (["quickstart", "eval.prompt_path={long_prompt}"],
                                           "with eval.max_new_tokens=96 it exceeds the model's context=128"),
    "hub id instead of a directory": (["quickstart", "model.init_from=Qwen/Qwen2.5-0.5B"], "huggingface-cli download Qwen/Qwen2.5-0.5B"),
    "unknown chat template": (["quickstart", "data.chat_template=chatml"], "data.chat_template must be none, model or a Jinja file"),
    "model template without one": (["quickstart", "data.chat_template=model"], "has no chat template"),
    "flash attention on CPU": (["quickstart", "model.attn_implementation=flash_attention_2"], "model.attn_implementation: "),
    "malformed prompt row": (["quickstart", *RL_ONLY, "rl.prompt_path={malformed}"], "malformed.jsonl:2: not valid JSON"),
    "prompt without answer": (["quickstart", *RL_ONLY, "rl.prompt_path={no_answer}"], "no_answer.jsonl:1: field 'answer' is missing"),
    "model dir without files": (["quickstart", *SFT_ONLY, "model.init_from={empty_model}"], "config.json"),
    "context beyond the model's": (["quickstart", *SFT_ONLY, "model.init_from={text_model}", "model.max_seq_len=128"],
                                   "model.max_seq_len=128 exceeds the context of the model in"),
    "vocabulary mismatch": (["quickstart", *SFT_ONLY, "model.init_from={small_vocab_model}"], "embeds only 20"),
    "resume a non-run": (["--resume", "{tmp}"], "not a run directory"),
    "image file missing": (["quickstart_vision", *RL_ONLY, "model.init_from={vlm_model}", "rl.prompt_path={missing_image}"],
                           "prompt a: cannot read image"),
    "placeholders vs images": (["quickstart_vision", *RL_ONLY, "model.init_from={vlm_model}",
                                "rl.prompt_path={two_placeholders}"], "has 2 <image> placeholders but 1 images"),
    "corrupt shard": (["quickstart_vision", *VISION_SMOKE, "stages=[vision_tower]", "model.init_from={text_model}",
                       "vlm.data.shards={{ocr: {bad_shards}}}", "vision_tower.weights={{ocr: 1.0}}", "trainer.progress=false"],
                      "bad_shards/ocr-000000.tar"),
}


# Found when a stage runs (they need the data the stages before it make); every other case is refused
# before anything is written, so not even the new run's directory exists.
FOUND_BY_A_STAGE = {"vocabulary mismatch", "image file missing", "placeholders vs images", "corrupt shard"}


@pytest.mark.parametrize("case", CASES)
def test_bad_input_is_one_clear_line(case, earlier_run, files, tmp_path, capsys):
    before = snapshot(earlier_run)
    args, fragment = CASES[case]
    args = [a.format(tmp=tmp_path, **files) for a in args]
    if args[0] != "--resume":
        args.append(f"run.dir={tmp_path / 'new'}")
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err and err[-1].startswith("error: ") and fragment.format(tmp=tmp_path) in err[-1], err[-3:]
    assert not any("Traceback" in line for line in err)
    assert snapshot(earlier_run) == before
    if case not in FOUND_BY_A_STAGE:
        assert not (tmp_path / "new").exists()


def test_debug_shows_the_traceback():
    from k15.errors import ConfigError

    with pytest.raises(ConfigError):
        main(["quickstart", "rl.iteratons=3", "--debug"])


def test_the_machine_is_checked_before_anything_runs_but_not_for_print_config(tmp_path, capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is visible: trainer=gpu is fine here")
    assert main(["quickstart", "trainer=gpu", f"run.dir={tmp_path / 'new'}"]) == 2
    assert "trainer.accelerator=gpu but no CUDA device is visible; on a CPU machine add trainer=cpu" in capsys.readouterr().err
    assert not (tmp_path / "new").exists()
    # planning a GPU run on a login node: the config prints without the machine, checkpoint or files
    assert main(["math_rl", "model.init_from=/nowhere/qwen", "rl.prompt_path=/nowhere/train.parquet",
                 "eval.prompt_path=/nowhere/test.jsonl", "--print-config"]) == 0
    assert "init_from: /nowhere/qwen" in capsys.readouterr().out
