"""Repeat detection: stop a response that loops (paper §2.6.2, "repeat (early stop)").

The rule: after each new token, count how often the newest n-gram of the response occurs in the
whole response so far (overlaps count). When it reaches `threshold`, the response stops with finish
reason "repeat". A model stuck in a loop re-emits the same n-gram every cycle, so the count grows
with every cycle, while ordinary text seldom repeats a long n-gram. The paper gives neither n nor
a threshold: both are configurable (`rl.repeat.ngram`, `rl.repeat.threshold`).

`newest_ngram_counts` is the engine's batched form (one tensor op per decode step); `count_newest`
is the same rule on a plain list, the reference that tests compare against.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

NO_TOKEN = -1  # left padding of a batch of responses; never equal to a real token id


@dataclass(frozen=True)
class RepeatRule:
    ngram: int
    threshold: int

    def __post_init__(self) -> None:
        if self.ngram < 1 or self.threshold < 2:
            raise ValueError(f"repeat rule needs ngram >= 1 and threshold >= 2, got {self.ngram}, {self.threshold}")

    def count_newest(self, tokens: list[int]) -> int:
        """Occurrences of the last `ngram` tokens in `tokens` (0 while the response is shorter)."""
        n = self.ngram
        if len(tokens) < n:
            return 0
        last = tokens[-n:]
        return sum(tokens[i : i + n] == last for i in range(len(tokens) - n + 1))

    def stops(self, tokens: list[int]) -> bool:
        return self.count_newest(tokens) >= self.threshold

    def hits(self, responses: torch.Tensor) -> torch.Tensor:
        """Bool [rows]: whose newest n-gram reached the threshold; see `newest_ngram_counts`."""
        return newest_ngram_counts(responses, self.ngram) >= self.threshold


def newest_ngram_counts(responses: torch.Tensor, n: int) -> torch.Tensor:
    """[rows, L] responses of >= 1 token, right-aligned (left-padded with NO_TOKEN) -> [rows] counts.

    A window that reaches into a row's padding can only equal another window with the same amount
    of padding, i.e. itself: padding never fakes a repeat.
    """
    rows, length = responses.shape
    if length < n:
        return torch.zeros(rows, dtype=torch.long, device=responses.device)
    windows = responses.unfold(1, n, 1)  # [rows, length - n + 1, n], a view
    return (windows == windows[:, -1:, :]).all(dim=-1).sum(dim=-1)
