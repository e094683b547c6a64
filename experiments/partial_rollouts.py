"""Finding F8 (paper §2.6.2): full rollouts vs partial rollouts (a token budget per iteration, loss on all segments or only on the current one)."""

from k15.config import ExperimentConfig
from experiments._ablation import ablation_base


def config() -> dict[str, ExperimentConfig]:
    full = ablation_base()
    arms = {"full": full}
    for loss_on in ("all", "current"):
        cfg = ablation_base()
        # A budget below most long-CoT answers (~30 tokens): those continue in the next iteration.
        cfg.rl.partial.budget = 24
        cfg.rl.partial.loss_on = loss_on
        arms[f"partial_{loss_on}"] = cfg
    return arms
