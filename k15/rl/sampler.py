"""Which prompts an RL iteration trains on.

`UniformSampler` walks a shuffled order of the prompt set, reshuffling at each pass, so every prompt
is seen once per pass. Its whole state (RNG, order, position) goes into the checkpoint, so a resumed
run draws exactly the prompts the uninterrupted run would have drawn. Curriculum and prioritized
samplers (issue "The k1.5 recipe") implement the same `draw` / `state_dict` / `load_state_dict`.
"""

from __future__ import annotations

import random


class UniformSampler:
    def __init__(self, num_prompts: int, seed: int):
        if num_prompts <= 0:
            raise ValueError("the prompt set is empty")
        self.num_prompts = num_prompts
        self.rng = random.Random(seed)
        self.order: list[int] = []
        self.pos = 0

    def draw(self, n: int) -> list[int]:
        out = []
        while len(out) < n:
            if self.pos >= len(self.order):
                self.order = list(range(self.num_prompts))
                self.rng.shuffle(self.order)
                self.pos = 0
            take = min(n - len(out), len(self.order) - self.pos)
            out += self.order[self.pos : self.pos + take]
            self.pos += take
        return out

    def state_dict(self) -> dict:
        return {"rng": self.rng.getstate(), "order": list(self.order), "pos": self.pos}

    def load_state_dict(self, state: dict) -> None:
        self.rng.setstate(_as_tuple(state["rng"]))
        self.order, self.pos = list(state["order"]), int(state["pos"])


def _as_tuple(value):
    """random's state is nested tuples; a checkpoint round trip may hand back lists."""
    return tuple(_as_tuple(v) for v in value) if isinstance(value, (list, tuple)) else value
