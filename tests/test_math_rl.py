"""experiments/math_rl.py as a researcher runs it: a local Qwen2 checkpoint (tiny, random init, byte-level BPE,
ChatML), a MATH-style Parquet file, the checkpoint's chat template, SFT -> k1.5 RL -> evaluation on a
`datasets` directory, all from the command line on CPU."""

import json

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from transformers import AutoModelForCausalLM, AutoTokenizer

from experiments.run import main
from tests.conftest import PROMPT_SETS

MATH = PROMPT_SETS / "math_tiny.parquet"


def scalars(tb_dir, prefix: str) -> dict[str, float]:
    events = EventAccumulator(str(tb_dir))
    events.Reload()
    return {t: events.Scalars(t)[-1].value for t in events.Tags()["scalars"] if t.startswith(prefix)}


def test_math_rl_end_to_end_on_a_tiny_qwen2(tiny_qwen2, tmp_path, capsys):
    run = tmp_path / "run"
    code = main([
        "math_rl", f"model.init_from={tiny_qwen2}", f"rl.prompt_path={MATH}",
        f"eval.prompt_path={PROMPT_SETS / 'math_tiny_dataset'}", "trainer=cpu", "run.threads=1", f"run.dir={run}",
        # optional SFT first, on the same file's worked solutions, to teach the random model the boxed format
        "stages=[sft,rl,eval]", f"sft.data_path={MATH}", "sft.max_steps=120", "sft.batch_size=12", "sft.optim.lr=3e-3",
        "model.max_seq_len=384", "rl.iterations=2", "rl.prompts_per_iteration=4", "rl.samples_per_prompt=4",
        "rl.max_new_tokens=224", "rl.lr=1e-5", "eval.max_new_tokens=224", "eval.batch_size=48", "eval.models=[init,rl]",
        "trainer.progress=false",
    ])
    assert code == 0
    # the project's tiny held-out set is its training set, and the run says so
    assert "12 of 12 prompts of eval.prompt_path are also in rl.prompt_path" in capsys.readouterr().err
    summary = json.loads((run / "summary.json").read_text())
    init, rl = summary["eval"]["init"], summary["eval"]["rl"]
    # the held-out set is grouped by MATH's "Level N", with pass@1 and pass@4 from 4 samples per problem
    assert rl["group_by"] == "difficulty" and set(rl["groups"]) <= {"1", "2", "3", "4", "5"}
    assert 0.0 <= rl["pass@1"] <= rl["pass@4"] <= 1.0
    # the random model writes no boxed answer at all; after SFT the math verifier extracts \boxed{} answers
    assert init["verdicts"] == {"math/missing": 48}
    assert rl["verdicts"].get("math/ok", 0) + rl["verdicts"].get("math/wrong", 0) > 0
    # the same in RL's rewards: verdicts of extracted boxed answers, counted in TensorBoard
    counts = scalars(run / "tb" / "rl", "reward/count_math_")
    assert counts.get("reward/count_math_ok", 0) + counts.get("reward/count_math_wrong", 0) > 0
    # the gold answers RL trained on are the last \boxed{} of each solution
    gold = [json.loads(line)["answer"] for line in (run / "rl" / "prompts.jsonl").read_text().splitlines()]
    assert gold[:3] == ["-7", "\\frac{3}{4}", "\\sqrt{2}"]
    # the trained model is a Qwen2 checkpoint again, with the user's tokenizer and chat template
    model = AutoModelForCausalLM.from_pretrained(run / "rl" / "model")
    tok, original = AutoTokenizer.from_pretrained(run / "rl" / "model"), AutoTokenizer.from_pretrained(tiny_qwen2)
    assert model.config.model_type == "qwen2" and tok.chat_template == original.chat_template
    text = "Solve $3x + 5 = -16$. So $x = \\boxed{-7}$.\n"
    assert tok.encode(text) == original.encode(text)
