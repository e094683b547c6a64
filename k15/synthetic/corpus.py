"""Text data of the synthetic world: the pretraining corpus and SFT examples.

Only training-split problems appear here; held-out problems are for evaluation alone.
"""

from __future__ import annotations

import random

from k15.config import WorldConfig
from k15.synthetic.arithmetic import sample_problems
from k15.synthetic.traces import Piece, make_trace, text_of


def world_levels(world: WorldConfig) -> range:
    return range(world.min_level, world.max_level + 1)


RAW_MAX_LEVEL = 2  # bare equations are facts of one or two operations


def pretrain_documents(world: WorldConfig, n: int, mix: dict[str, float], seed: int) -> list[str]:
    """`n` documents mixing bare equations (`raw`), short answers and long chains of thought.

    Bare equations are one- or two-operation facts ("7-2=5"): they teach the arithmetic, not the
    one-shot answering of long chains, which would make the short style so good that thinking
    longer has little left to win. Long traces here carry no injected errors: the correction
    behaviour is taught in SFT, where the wrong digit can be masked out of the loss.
    """
    rng = random.Random(f"pretrain/{seed}")
    kinds = list(mix)
    weights = [mix[k] for k in kinds]
    fact_levels = range(world.min_level, min(world.max_level, RAW_MAX_LEVEL) + 1)
    facts = iter(sample_problems(n, "train", fact_levels, world.heldout_fraction, seed + 3))
    docs = []
    for problem in sample_problems(n, "train", world_levels(world), world.heldout_fraction, seed):
        kind = rng.choices(kinds, weights)[0]
        if kind == "raw":
            fact = next(facts)
            docs.append(fact.prompt + fact.answer)
        else:
            docs.append(problem.prompt + text_of(make_trace(problem, kind, rng)))
    return docs


def sft_examples(world: WorldConfig, n: int, long_fraction: float, seed: int) -> list[tuple[str, list[Piece]]]:
    """`n` (prompt, response pieces) pairs; a share `long_fraction` of responses are long CoT.

    Nothing in the prompt says which style to use: the model learns both, and RL later finds out
    which one pays (the long one, on hard levels).
    """
    rng = random.Random(f"sft/{seed}")
    out = []
    for problem in sample_problems(n, "train", world_levels(world), world.heldout_fraction, seed + 1):
        style = "long" if rng.random() < long_fraction else "short"
        out.append((problem.prompt, make_trace(problem, style, rng, world.error_rate)))
    return out
