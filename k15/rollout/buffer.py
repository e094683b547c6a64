"""The replay buffer of partial rollouts: groups of k trajectories that are not all finished yet.

A trajectory is the response to one prompt, built from segments, each generated in one iteration
(paper Fig. 3b: iter n-m ... iter n). A group is the k trajectories of one draw of a prompt: the
unit of the mean baseline, so it is trained only once all k have finished (see
k15.rollout.partial). The buffer keeps whole groups, finished members included, oldest first.

Its state is plain lists and numbers, so it goes into the checkpoint and comes back exactly.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field


@dataclass
class Trajectory:
    tokens: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)  # from the engine, under the policy of each segment's iteration
    segments: list[tuple[int, int]] = field(default_factory=list)  # (iteration, number of tokens), in order
    finish_reason: str | None = None  # stop | length | repeat; None while unfinished

    @property
    def done(self) -> bool:
        return self.finish_reason is not None

    def extend(self, iteration: int, tokens: list[int], logprobs: list[float]) -> None:
        self.tokens += tokens
        self.logprobs += logprobs
        self.segments.append((iteration, len(tokens)))

    def tokens_before(self, iteration: int) -> int:
        """How many tokens were generated before `iteration` (by older policies)."""
        return sum(n for it, n in self.segments if it < iteration)


@dataclass
class Group:
    id: str  # "<iteration drawn>.<slot>": unique, so the same prompt may be in flight twice
    prompt_index: int  # into the prompt set
    members: list[Trajectory]

    @property
    def done(self) -> bool:
        return all(m.done for m in self.members)


class ReplayBuffer:
    def __init__(self) -> None:
        self.groups: list[Group] = []

    def __len__(self) -> int:
        return len(self.groups)

    def unfinished(self) -> list[tuple[Group, Trajectory]]:
        return [(g, m) for g in self.groups for m in g.members if not m.done]

    def add(self, group: Group) -> None:
        self.groups.append(group)

    def pop_done(self) -> list[Group]:
        """Remove and return the groups whose members have all finished, oldest first."""
        done = [g for g in self.groups if g.done]
        self.groups = [g for g in self.groups if not g.done]
        return done

    def state_dict(self) -> dict:
        return {"groups": [asdict(g) for g in self.groups]}

    def load_state_dict(self, state: dict) -> None:
        self.groups = [
            Group(g["id"], int(g["prompt_index"]), [
                Trajectory(list(m["tokens"]), list(m["logprobs"]), [tuple(s) for s in m["segments"]], m["finish_reason"])
                for m in g["members"]
            ])
            for g in state["groups"]
        ]
