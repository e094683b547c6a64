"""The numbers behind the plots: scalars read back from TensorBoard per arm, and where a model's point lands."""

import pytest
from torch.utils.tensorboard import SummaryWriter

from k15.eval.curves import arm_logs, overlay, read_scalars
from k15.eval.plots import accuracy_vs_tokens


def write_scalars(tb_dir, curves: dict[str, dict[int, float]]) -> None:
    writer = SummaryWriter(str(tb_dir))
    for tag, points in curves.items():
        for step, value in points.items():
            writer.add_scalar(tag, value, step)
    writer.close()


@pytest.fixture
def experiment(tmp_path):
    """Two arms with RL curves (one without `rl/kl`), one arm that never reached RL, and a stray file."""
    write_scalars(tmp_path / "reset" / "tb" / "rl", {"reward/reward_mean": {1: 0.25, 2: 0.5, 3: 0.75}, "rl/kl": {1: 0.0, 3: 0.125}})
    write_scalars(tmp_path / "persistent" / "tb" / "rl", {"reward/reward_mean": {1: 0.5, 2: 0.25}})
    write_scalars(tmp_path / "crashed" / "tb" / "sft", {"sft/loss": {1: 2.0}})
    (tmp_path / "results.json").write_text("{}")
    return tmp_path


def test_scalars_come_back_with_their_steps_and_missing_tags_are_left_out(experiment):
    got = read_scalars(experiment / "reset" / "tb" / "rl", ("reward/reward_mean", "rl/kl", "rollout/len_mean"))
    assert got == {"reward/reward_mean": ([1, 2, 3], [0.25, 0.5, 0.75]), "rl/kl": ([1, 3], [0.0, 0.125])}


def test_only_arms_with_logs_of_the_stage_are_overlaid(experiment):
    assert arm_logs(experiment) == {"persistent": experiment / "persistent" / "tb" / "rl",
                                    "reset": experiment / "reset" / "tb" / "rl"}
    assert list(arm_logs(experiment, "sft")) == ["crashed"]
    out = overlay(experiment, tags=("reward/reward_mean", "rl/kl"))
    assert out == experiment / "curves_rl.png" and out.stat().st_size > 1000
    assert overlay(experiment, tags=("rollout/len_mean",)) is None  # no arm logged it: no empty figure


def test_each_model_lands_at_its_tokens_and_pass_at_1_in_percent():
    fig = accuracy_vs_tokens({"sft": {"pass@1": 0.5, "mean_tokens": 12.0}, "rl": {"pass@1": 0.875, "mean_tokens": 30.5}})
    ax = fig.axes[0]
    points = [tuple(c.get_offsets()[0]) for c in ax.collections]
    assert points == [(12.0, 50.0), (30.5, 87.5)]
    assert [t.get_text() for t in ax.texts] == ["sft", "rl"]
