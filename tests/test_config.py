import pytest

from experiments.run import main, resolve
from k15.config import ExperimentConfig, apply_overrides, base, load_yaml, to_yaml
from k15.errors import ConfigError


def test_override_coerces_types():
    cfg = apply_overrides(base(), ["sft.max_steps=7", "sft.optim.lr=3e-4", "eval.models=[sft]", "run.dir=/tmp/x"])
    assert cfg.sft.max_steps == 7 and isinstance(cfg.sft.max_steps, int)
    assert cfg.sft.optim.lr == pytest.approx(3e-4) and isinstance(cfg.sft.optim.lr, float)
    assert cfg.eval.models == ["sft"]
    assert cfg.run.dir == "/tmp/x"


def test_string_fields_take_text_that_yaml_would_read_otherwise():
    template = "Question: {question} Reference: {reference} Answer: {response}"  # not YAML at all
    cfg = apply_overrides(base(), [f"rewards.rm.prompt_template={template}", "run.name=12", "rl.prompt_path=[a]",
                                   "rewards.rm.kind=classic_rm", "rewards.rm.path=/models/rm"])
    assert cfg.rewards.rm.prompt_template == template and cfg.run.name == "12" and cfg.rl.prompt_path == "[a]"
    assert apply_overrides(base(), ["rl.prompt_path=null"]).rl.prompt_path is None
    with pytest.raises(ConfigError, match=r"rewards.rm.prompt_template must contain \{reference\}"):
        apply_overrides(base(), ["rewards.rm.kind=classic_rm", "rewards.rm.path=/m", "rewards.rm.prompt_template=Q: {question} {response}"])
    with pytest.raises(ConfigError, match="rewards.rm.kind=cot_rm needs rewards.rm.path"):
        apply_overrides(base(), ["rewards.rm.kind=cot_rm"])
    with pytest.raises(ConfigError, match="rewards.rm.path 'cot_rm' is a stage that does not run before rl"):
        apply_overrides(base(), ["rewards.rm.kind=cot_rm", "rewards.rm.path=cot_rm", "stages=[rl]"])


def test_unknown_key_names_key_and_closest():
    with pytest.raises(ConfigError) as err:
        apply_overrides(base(), ["sft.max_step=3"])
    message = str(err.value)
    assert "'sft.max_step'" in message and "sft.max_steps" in message
    assert "\n" not in message


def test_wrong_type_names_key_type_and_value():
    with pytest.raises(ConfigError) as err:
        apply_overrides(base(), ["pretrain.batch_size=lots"])
    message = str(err.value)
    assert "pretrain.batch_size" in message and "int" in message and "lots" in message


@pytest.mark.parametrize(
    "override, fragment",
    [
        ("sft.max_steps=0", "sft.max_steps"),
        ("world.max_level=0", "levels"),
        ("stages=[pretrain,dance]", "dance"),
        ("model.num_heads=3", "divisible"),
        ("eval.models=[sft,dpo]", "eval.models"),
        ("long2short.dpo_nll_weight=-1", "long2short.dpo_nll_weight must be >= 0"),
        ("rl.max_seconds=-5", r"rl.max_seconds must be >= 0 \(0: no limit\), got -5"),
    ],
)
def test_impossible_values_are_refused(override, fragment):
    with pytest.raises(ConfigError, match=fragment):
        apply_overrides(base(), [override])


def test_preset_group_override_and_unknown_preset():
    assert apply_overrides(base(), ["model=small"]).model.hidden_size == 256
    with pytest.raises(ConfigError, match="unknown model preset 'huge'"):
        apply_overrides(base(), ["model=huge"])


def test_experiment_with_a_wrong_type_is_refused_before_anything_runs():
    cfg = base()
    cfg.sft.max_steps = "many"
    with pytest.raises(ConfigError, match="max_steps"):
        apply_overrides(cfg, [])


def test_saved_config_round_trips(tmp_path):
    cfg = apply_overrides(base(), ["sft.max_steps=11", "model=small"])
    (tmp_path / "config.yaml").write_text(to_yaml(cfg))
    assert load_yaml(tmp_path / "config.yaml") == cfg


def test_cli_errors_are_one_line_and_exit_2(capsys):
    assert main(["quickstart", "sft.max_stepz=1"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: unknown config key 'sft.max_stepz'") and "\n" not in err
    assert main(["no_such_experiment"]) == 2
    assert "unknown experiment" in capsys.readouterr().err


def test_cli_print_config_shows_overrides(capsys):
    assert main(["quickstart", "--print-config", "sft.max_steps=5"]) == 0
    assert "max_steps: 5" in capsys.readouterr().out


def test_cli_list_names_quickstart(capsys):
    assert main(["--list"]) == 0
    assert "quickstart" in capsys.readouterr().out


def test_resolve_sets_run_name():
    (cfg,) = resolve("quickstart", []).values()
    assert isinstance(cfg, ExperimentConfig) and cfg.run.name == "quickstart"


VISION = ["stages=[pretrain,vision_tower,vision_joint,eval]"]


@pytest.mark.parametrize("overrides, fragment", [
    (["vision_joint.weights.orc=0.1"], "vision_joint.weights name sources without data: ['orc']"),
    (["vlm.data.synthetic.scene=10"], "vlm.data.synthetic: unknown sources ['scene']"),
    (["vision_tower.ocr_kinds=[ocr,scenes]"], "vision_tower: ocr_kinds must name some of ocr, scene"),
    (["stages=[pretrain,long_context]", "long_context.seq_len_schedule=[512,128]"], "long_context.seq_len_schedule must be row lengths >= 4 that never shrink"),
    (["world.max_level=7"], "image problems fit levels up to 6"),
    (["stages=[pretrain,vision_tower,sft]"], "stages: sft after vision_tower would get a VLM"),
    (["vision_tower.ocr_weight=1", "vlm.projector.kind=mlp"], "needs vlm.projector.kind=embedding_softmax"),
    (["vision_tower.trainable=[towr]"], "vision_tower.trainable must name some of tower, projector, decoder"),
    (["vlm.tasks=[counting]"], "vlm.tasks must name some of problem, count, compare, chart"),
])
def test_vision_settings_that_cannot_work_are_refused_up_front(overrides, fragment):
    with pytest.raises(ConfigError, match=fragment.replace("[", r"\[").replace("]", r"\]")):
        apply_overrides(base(), VISION + overrides)


def test_saved_dicts_replace_the_defaults_instead_of_merging_into_them(tmp_path):
    cfg = base()
    cfg.vision_tower.weights = {"ocr": 1.0}  # fewer sources than the default
    cfg.vision_joint.weights_end = {}
    (tmp_path / "config.yaml").write_text(to_yaml(cfg))
    loaded = load_yaml(tmp_path / "config.yaml")
    assert loaded.vision_tower.weights == {"ocr": 1.0} and loaded.vision_joint.weights_end == {}
    assert loaded == cfg


def test_partial_rollouts_that_would_cut_answers_short_are_refused():
    # budget x (max_continuations + 1) is the most tokens a trajectory can get: below max_new_tokens it is refused.
    with pytest.raises(ConfigError) as err:
        apply_overrides(base(), ["rl.max_new_tokens=30", "rl.partial.budget=8", "rl.partial.max_continuations=2"])
    assert str(err.value) == (
        "rl.partial.budget x (rl.partial.max_continuations + 1) = 8 x 3 = 24 is below rl.max_new_tokens=30: "
        "answers would be cut short of it; raise the budget or max_continuations"
    )
    for ok in (["rl.partial.max_continuations=3"], ["rl.partial.budget=10"], ["rl.partial.budget=0"], ["rl.partial.budget=40"]):
        apply_overrides(base(), ["rl.max_new_tokens=30", "rl.partial.budget=8", "rl.partial.max_continuations=2"] + ok)


def test_partial_rollouts_that_would_cut_long2short_rl_answers_short_are_refused():
    # l2s_rl runs the RL loop with rl.partial under long2short.rl_max_new_tokens: the same bound applies there
    stages = "stages=[pretrain,sft,rl,l2s_rl]"
    with pytest.raises(ConfigError, match=r"= 24 is below long2short.rl_max_new_tokens=30: long2short RL answers would be cut short"):
        apply_overrides(base(), [stages, "rl.max_new_tokens=20", "long2short.rl_max_new_tokens=30",
                                 "rl.partial.budget=8", "rl.partial.max_continuations=2"])
    apply_overrides(base(), [stages, "rl.max_new_tokens=20", "long2short.rl_max_new_tokens=24",
                             "rl.partial.budget=8", "rl.partial.max_continuations=2"])


def test_sampling_floor_zero_is_the_papers_rule_and_negative_is_refused():
    assert apply_overrides(base(), ["rl.sampling.prioritized=true", "rl.sampling.floor=0"]).rl.sampling.floor == 0.0
    with pytest.raises(ConfigError, match=r"rl.sampling.floor must be >= 0 \(0: the paper's 1 - s_i exactly\), got -0.1"):
        apply_overrides(base(), ["rl.sampling.floor=-0.1"])
