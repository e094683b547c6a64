"""Overlaying the arms of an ablation: one plot per TensorBoard scalar, one line per arm."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402

DEFAULT_TAGS = ("reward/reward_mean", "rollout/len_mean", "rl/kl", "reward/zero_std_frac")


def read_scalars(tb_dir: Path, tags: tuple[str, ...]) -> dict[str, tuple[list[int], list[float]]]:
    events = EventAccumulator(str(tb_dir), size_guidance={"scalars": 0})
    events.Reload()
    have = set(events.Tags().get("scalars", []))
    return {t: ([e.step for e in events.Scalars(t)], [e.value for e in events.Scalars(t)]) for t in tags if t in have}


def arm_logs(experiment_dir: Path, stage: str = "rl") -> dict[str, Path]:
    """{arm: its TensorBoard dir for `stage`} for every arm directory that has one."""
    return {p.name: p / "tb" / stage for p in sorted(experiment_dir.iterdir()) if (p / "tb" / stage).is_dir()}


def overlay(experiment_dir: Path, out: Path | None = None, stage: str = "rl", tags: tuple[str, ...] = DEFAULT_TAGS):
    """Write EXPERIMENT/curves_<stage>.png: a panel per tag, a line per arm. Returns the path or None."""
    arms = {arm: read_scalars(d, tags) for arm, d in arm_logs(experiment_dir, stage).items()}
    present = [t for t in tags if any(t in s for s in arms.values())]
    if not arms or not present:
        return None
    fig, axes = plt.subplots(1, len(present), figsize=(4.2 * len(present), 3.4), dpi=110, squeeze=False)
    for ax, tag in zip(axes[0], present):
        for arm, scalars in arms.items():
            if tag in scalars:
                ax.plot(*scalars[tag], label=arm, lw=1.4)
        ax.set_title(tag, fontsize=10)
        ax.set_xlabel("iteration")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    out = out or experiment_dir / f"curves_{stage}.png"
    fig.savefig(out)
    plt.close(fig)
    return out
