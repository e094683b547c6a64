"""A learned reward model as the RL reward: the free-form verifier, the registry's RM path and its
disagreement counts, foreign RM directories, the probe, and the command line's one-line refusals."""

import json
import os
import shutil
import subprocess
import sys

import pytest
import torch
from transformers import AutoModelForSequenceClassification

from k15.config import RMRewardConfig
from k15.data.prompts import PromptRecord, freeform_prompt_set, write_prompt_set
from k15.errors import CheckpointError, DataError
from k15.models.decoder import export
from k15.reward_models.checkpoints import read_marker
from k15.reward_models.classic import ClassicRM, classic_from_decoder, export_classic_rm
from k15.reward_models.cot import CoTRM, with_context
from k15.reward_models.data import judge_prompt
from k15.reward_models.judge import RewardJudge, RewardVerdict, example_of, probe
from k15.rewards.freeform import verify_freeform
from k15.rewards.registry import VERIFIER_ERROR, RewardRegistry
from tests.tiny import RM_SMOKE, TINY

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def record(i: int, answer: str = "eight apples", domain: str = "freeform") -> PromptRecord:
    return PromptRecord(f"p{i}", "5+3= how many apples?", answer, 1, domain)


class ScriptedJudge:
    """Says what it is told, in order; records what it was asked."""

    name = "cot_rm"

    def __init__(self, verdicts: list[bool | None], domains=("freeform",)):
        self.verdicts, self.domains, self.asked = verdicts, set(domains), []

    def judge(self, examples):
        self.asked += examples
        return [RewardVerdict(v, "unparsed" if v is None else ("correct" if v else "wrong")) for v in self.verdicts]


def test_the_freeform_verifier_reads_the_final_answer_in_any_surface_form():
    assert verify_freeform("<think>5+3=8</think><answer>eight</answer>", "eight apples") == (1.0, "ok", "eight")
    assert verify_freeform("<think>5+3=8</think><answer>8 pears</answer>", "eight apples").reward == 0.0
    assert verify_freeform("so the answer is 16/2 apples.", "eight apples").reward == 1.0
    assert verify_freeform("<think>5+3=8</think>", "eight apples") == (0.0, "missing", None)
    assert verify_freeform("<answer>7</answer><answer>8</answer>", "8").reward == 0.0  # "7 8" states no value


def test_the_rm_replaces_the_reward_of_its_domains_and_disagreement_is_counted_by_hand():
    # samples: truth right, right, wrong, wrong, (arithmetic: not judged), right but not in `judged`
    items = [("a", "<answer>8</answer>", record(0)), ("b", "<answer>eight</answer>", record(1)),
             ("c", "<answer>7</answer>", record(2)), ("d", "<answer>9</answer>", record(3)),
             ("e", "<answer>8</answer>", record(4, "8", "arithmetic")), ("f", "<answer>8</answer>", record(5))]
    judge = ScriptedJudge([True, None, True, False])  # agree, FN (unparsed), FP, agree
    registry = RewardRegistry(judge=judge)
    verdicts = registry.score(items, judged={"a", "b", "c", "d", "e"})
    assert [verdicts[s].reward for s in "abcdef"] == [1.0, 0.0, 1.0, 0.0, 1.0, 1.0]
    assert [verdicts[s].reason for s in "abcd"] == ["correct", "unparsed", "correct", "wrong"]
    assert verdicts["f"].reason == "ok"  # not judged (a truncated sample, in RL): the verifier's verdict stays
    assert registry.last_rm == {"judged": 4, "rm_correct": 2, "truth_correct": 2, "disagree": 2,
                                "false_positive": 1, "false_negative": 1}
    # the RM read the prompt, the reference and only the final answer
    assert [(e.question, e.reference, e.response) for e in judge.asked[:2]] == [
        ("5+3= how many apples?", "eight apples", "8"), ("5+3= how many apples?", "eight apples", "eight")]
    assert registry.counts["cot_rm/unparsed"] == 1 and registry.counts["freeform/ok"] == 3  # truth counted too
    assert registry.counts["rule/ok"] == 1


def test_an_rm_that_fails_makes_its_samples_counted_errors_only():
    class Broken(ScriptedJudge):
        def judge(self, examples):
            raise RuntimeError("out of memory")

    registry = RewardRegistry(judge=Broken([]))
    verdicts = registry.score([("a", "<answer>8</answer>", record(0)), ("b", "<answer>8</answer>", record(1, "8", "arithmetic"))])
    assert verdicts["a"] == (0.0, VERIFIER_ERROR, None) and verdicts["b"].reward == 1.0


def test_without_a_judge_nothing_changes():
    registry = RewardRegistry()
    verdicts = registry.score([("a", "<answer>8</answer>", record(0))])
    assert verdicts["a"].reward == 1.0 and registry.last_rm == {}


def test_classic_judge_thresholds_and_templates(tiny_lm):
    lm, tok = tiny_lm
    model = classic_from_decoder(lm, tok, max_len=96)
    torch.nn.init.normal_(model.score.weight, std=0.5)
    rm = ClassicRM(model, tok)
    examples = [example_of("5+3=", "8", f"<answer>{v}</answer>") for v in (8, 7, 9, 12)]
    probs = rm.score([judge_prompt(ex) for ex in examples])
    threshold = sorted(probs)[2]  # two at or above, two below
    judge = RewardJudge("classic_rm", rm, RMRewardConfig(kind="classic_rm", threshold=threshold))
    assert [j.correct for j in judge.judge(examples)] == [p >= threshold for p in probs]
    assert sum(j.correct for j in judge.judge(examples)) == 2
    custom = RewardJudge("classic_rm", rm, RMRewardConfig(prompt_template="Q {question} A {reference} R {response}"))
    assert custom.prompt(examples[1]) == "Q 5+3= A 8 R 7"


def test_probe_refuses_an_rm_whose_verdicts_never_parse(tiny_lm):
    lm, tok = tiny_lm  # untrained: writes no verdict
    judge = RewardJudge("cot_rm", CoTRM(with_context(lm, 160), tok, max_new_tokens=8), RMRewardConfig(kind="cot_rm"))
    records = freeform_prompt_set(4, "train", range(1, 3), 0.1, seed=0)
    # a judge prompt with no room left for the verdict is its own reason; the others are judged as usual
    long = example_of("5+3=", "8", "<answer>" + "eight " * 60 + "</answer>")
    said = judge.judge([example_of(r.prompt, r.answer, r.answer) for r in records[:2]] + [long])
    assert [v.reason for v in said] == ["unparsed", "unparsed", "too_long"]
    with pytest.raises(CheckpointError, match=r"the cot_rm's verdicts never parse \(0 of 4 probe"):
        probe(judge, records)
    with pytest.raises(DataError, match=r"no prompt of the RL prompt set has one of these domains"):
        probe(judge, [record(0, "8", "arithmetic")])
    # one parsed verdict is enough (the probe checks that the RM answers, not that it is right)
    scripted = RewardJudge("cot_rm", None, RMRewardConfig())
    scripted.judge = ScriptedJudge([None, False, None, None]).judge
    assert [j.correct for j in probe(scripted, records)] == [None, False, None, None]


def test_foreign_rm_directories_are_read_by_architecture(tiny_lm, tmp_path):
    lm, tok = tiny_lm
    classic = classic_from_decoder(lm, tok, max_len=96)
    export(classic, tok, tmp_path / "seqcls")  # a plain transformers save: no k15 marker
    assert read_marker(tmp_path / "seqcls", "classic", "rewards.rm.path", foreign_ok=True) == {"kind": "classic", "foreign": True}
    with pytest.raises(CheckpointError, match="no k15_reward_model.json"):
        read_marker(tmp_path / "seqcls", "classic", "rewards.rm.path")  # k15's own stages still want the marker
    with pytest.raises(CheckpointError, match=r"is not a cot reward model: no k15_reward_model.json, and its architecture "
                                              r"LlamaForSequenceClassification is not a causal language model"):
        read_marker(tmp_path / "seqcls", "cot", "rewards.rm.path", foreign_ok=True)
    export(lm, tok, tmp_path / "policy")
    with pytest.raises(CheckpointError, match="LlamaForCausalLM is not a sequence-classification model with one output"):
        read_marker(tmp_path / "policy", "classic", "rewards.rm.path", foreign_ok=True)
    two = AutoModelForSequenceClassification.from_config(classic.config.__class__(**{**classic.config.to_dict(), "num_labels": 2}))
    export(two, tok, tmp_path / "two_labels")
    with pytest.raises(CheckpointError, match="one output"):
        read_marker(tmp_path / "two_labels", "classic", "rewards.rm.path", foreign_ok=True)
    marked = export_classic_rm(classic, tok, tmp_path / "marked")
    with pytest.raises(CheckpointError, match="is a classic reward model, not a cot one"):
        read_marker(marked, "cot", "rewards.rm.path", foreign_ok=True)


# ------------------------------------------------------------------ from the command line


def quickstart(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "experiments.run", "quickstart", *TINY, "run.threads=1",
                           "model.max_seq_len=128", "rl.max_new_tokens=16", *args],
                          env=ENV, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def rm_dirs(tmp_path_factory):
    """A Classic RM directory and a policy export (a causal LM that writes no verdicts), from the tiny run."""
    from k15.config import ModelConfig
    from k15.models.decoder import build_decoder
    from k15.tokenizer import build_synthetic_tokenizer

    root = tmp_path_factory.mktemp("rms")
    tok = build_synthetic_tokenizer()
    torch.manual_seed(0)
    lm = build_decoder(ModelConfig(hidden_size=32, num_layers=2, num_heads=2, num_kv_heads=2, intermediate_size=64,
                                   max_seq_len=128), tok)
    export(lm, tok, root / "policy")
    export_classic_rm(classic_from_decoder(lm, tok), tok, root / "classic")
    prompts = root / "freeform.jsonl"
    write_prompt_set(freeform_prompt_set(16, "train", range(1, 3), 0.1, seed=0), prompts)
    return root


@pytest.mark.parametrize("case", ["missing", "wrong_kind", "never_parses", "no_domain"])
def test_bad_rm_directories_stop_before_rl_in_one_line(rm_dirs, tmp_path, case):
    path = {"missing": rm_dirs / "nowhere", "wrong_kind": rm_dirs / "classic"}.get(case, rm_dirs / "policy")
    run_dir = tmp_path / "run"
    domains = ["rewards.rm.domains=[math]"] if case == "no_domain" else []
    proc = quickstart("rewards.rm.kind=cot_rm", f"rewards.rm.path={path}", f"rl.prompt_path={rm_dirs / 'freeform.jsonl'}",
                      "stages=[rl]", f"model.init_from={rm_dirs / 'policy'}", f"run.dir={run_dir}", *domains)
    assert proc.returncode == 2, proc.stderr[-2000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    expected = {"missing": f"rewards.rm.path={path}: directory not found",
                "wrong_kind": "is a classic reward model, not a cot one",
                "never_parses": "the cot_rm's verdicts never parse",
                "no_domain": "rewards.rm.domains=['math']: no prompt of the RL prompt set has one of these domains"}[case]
    assert len(errors) == 1 and expected in errors[0], proc.stderr[-2000:]
    assert not (run_dir / "rl" / "model").exists()  # RL never trained
    if case in ("missing", "wrong_kind"):
        assert not run_dir.exists()  # refused by the preflight: nothing written


def test_rl_with_an_rm_logs_disagreement_every_iteration(rm_dirs, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run_dir = tmp_path / "run"
    proc = quickstart("rewards.rm.kind=classic_rm", f"rewards.rm.path={rm_dirs / 'classic'}",
                      f"rl.prompt_path={rm_dirs / 'freeform.jsonl'}", "stages=[rl]", f"model.init_from={rm_dirs / 'policy'}",
                      "rl.iterations=2", "rl.prompts_per_iteration=2", "rl.samples_per_prompt=2", "rl.max_new_tokens=8",
                      "rewards.rm.threshold=0.4", f"run.dir={run_dir}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "comes from classic_rm" in proc.stderr + proc.stdout
    events = EventAccumulator(str(next((run_dir / "tb").rglob("events.out.tfevents.*")).parent))
    events.Reload()
    series = lambda tag: [e.value for e in events.Scalars(tag)]  # noqa: E731
    # 2 iterations, a quarter of the samples stop within 8 tokens (the rest are truncated, never judged).
    # The untrained head says p = 0.5 >= 0.4 to every stopped sample and the random policy is always
    # wrong: the RM pays every judged sample (rm_correct 1), the truth none, so they disagree on all of them.
    assert series("rollout/truncated_frac") == [0.75, 0.75]
    assert series("reward/rm_correct_frac") == [1.0, 1.0] and series("reward/truth_correct_frac") == [0.0, 0.0]
    assert series("reward/rm_disagreement") == [1.0, 1.0] and series("reward/rm_false_positive_frac") == [1.0, 1.0]
    assert series("reward/count_classic_rm_correct") == [1.0, 2.0]  # samples so far: one judged per iteration
    summary = json.loads((run_dir / "summary.json").read_text())
    assert "rl" in summary["stages"]


def test_a_resumed_run_finds_the_rm_it_trained(rm_dirs, tmp_path):
    """rewards.rm.path names a stage of this run: after an interruption before RL, --resume finds its export."""
    run_dir = tmp_path / "run"
    args = ["stages=[pretrain,sft,rm_data,classic_rm,rl]", "rewards.rm.kind=classic_rm", "rewards.rm.path=classic_rm",
            f"rl.prompt_path={rm_dirs / 'freeform.jsonl'}", "rl.iterations=1", "rl.prompts_per_iteration=2",
            "rl.samples_per_prompt=2", "rl.max_new_tokens=8", "pretrain.max_steps=2", "sft.max_steps=2",
            *[o for o in RM_SMOKE if "classic" in o or "data." in o or "max_len" in o], f"run.dir={run_dir}"]
    assert quickstart(*args).returncode == 0
    summary = json.loads((run_dir / "summary.json").read_text())
    del summary["stages"]["rl"]  # as if the run had stopped before its RL stage finished
    (run_dir / "summary.json").write_text(json.dumps(summary))
    shutil.rmtree(run_dir / "rl")
    proc = subprocess.run([sys.executable, "-m", "experiments.run", "--resume", str(run_dir)], env=ENV,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert f"comes from classic_rm {run_dir / 'classic_rm' / 'model'}" in proc.stderr.replace("\n", "")
    assert "classic_rm: finished before, skipped" in proc.stderr and (run_dir / "rl" / "model").is_dir()
