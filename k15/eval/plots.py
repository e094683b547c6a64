"""Accuracy against mean tokens per answer, one point per model (the paper's Fig. 7 in miniature)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display on servers and CI
import matplotlib.pyplot as plt  # noqa: E402


def accuracy_vs_tokens(results: dict[str, dict], title: str = "held-out pass@1 vs mean tokens per answer"):
    """A matplotlib figure from {model: summary-style eval dict with 'pass@1' and 'mean_tokens'}."""
    fig, ax = plt.subplots(figsize=(6, 4.5), dpi=120)
    for name, r in results.items():
        ax.scatter(r["mean_tokens"], 100 * r["pass@1"], s=40)
        ax.annotate(name, (r["mean_tokens"], 100 * r["pass@1"]), textcoords="offset points", xytext=(5, 4), fontsize=9)
    ax.set_xlabel("mean tokens per answer")
    ax.set_ylabel("pass@1 (%)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def save_figure(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path
