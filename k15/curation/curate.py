"""The RL prompt-set curation pass (k15-paper.md §8), filter by filter, counting what each removes.

    1. duplicates                 same text up to case and whitespace
    2. multiple_choice, true_false, proof   hack-prone types (hack_types.py)
       (then: domain tags for untagged records, which also picks each record's verifier)
    3. guessable_without_cot      the model answers correctly WITHOUT chain of thought within
                                  `no_cot_tries` tries (paper: 8); code prompts are exempt
    4. difficulty                 pass rate over `samples` samples at a high temperature (paper: 10;
                                  the temperature is not given, 1.2 here), written as `pass_rate`
    5. trivial                    pass rate above `max_pass_rate` (off unless set)
Answers are scored by the reward registry, so every domain is judged by its own verifier.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from k15.curation.dedup import dedup
from k15.curation.domains import tagged
from k15.curation.hack_types import HACK_TYPES, hack_type
from k15.curation.sampling import Sampler
from k15.data.prompts import PromptRecord
from k15.errors import ConfigError
from k15.rewards.registry import RewardRegistry

FILTERS = ("duplicate", *HACK_TYPES, "guessable_without_cot", "trivial")


@dataclass
class CurationConfig:
    samples: int = 10  # per prompt, for the pass rate (paper: 10)
    temperature: float = 1.2  # "relatively high" in the paper, which gives no number
    no_cot_tries: int = 8  # paper: N = 8
    no_cot_temperature: float = 1.2
    no_cot_exempt_domains: tuple[str, ...] = ("code",)  # the paper applies the guess test to general QA
    max_pass_rate: float | None = None  # drop prompts solved more often than this; None keeps all
    max_new_tokens: int = 64
    no_cot_max_new_tokens: int = 8
    batch_size: int = 64
    seed: int = 0

    def __post_init__(self) -> None:
        if self.samples < 1 or self.no_cot_tries < 0:
            raise ConfigError("curation needs samples >= 1 and no_cot_tries >= 0")
        if self.max_pass_rate is not None and not 0.0 <= self.max_pass_rate <= 1.0:
            raise ConfigError(f"max_pass_rate must be in [0, 1], got {self.max_pass_rate}")


@dataclass
class CurationReport:
    total: int
    removed: dict[str, int] = field(default_factory=lambda: dict.fromkeys(FILTERS, 0))
    removed_ids: dict[str, list[str]] = field(default_factory=lambda: {f: [] for f in FILTERS})
    domains: Counter = field(default_factory=Counter)  # of the kept prompts
    kept: int = 0

    def drop(self, name: str, record: PromptRecord) -> None:
        self.removed[name] += 1
        self.removed_ids[name].append(record.id)


def rewards(records: list[PromptRecord], texts: list[list[str]], registry: RewardRegistry) -> list[list[float]]:
    """Reward of every response, per record (sample ids: record position / sample number)."""
    items = [(f"{i}/{k}", t, r) for i, (r, ts) in enumerate(zip(records, texts)) for k, t in enumerate(ts)]
    verdicts = registry.score(items)
    return [[verdicts[f"{i}/{k}"].reward for k in range(len(ts))] for i, ts in enumerate(texts)]


def curate(
    records: list[PromptRecord],
    sampler: Sampler,
    registry: RewardRegistry,
    cfg: CurationConfig,
    on_stage: Callable[[str], None] = lambda stage: None,
) -> tuple[list[PromptRecord], CurationReport]:
    report = CurationReport(total=len(records))
    kept, duplicates = dedup(records)
    for r in duplicates:
        report.drop("duplicate", r)

    survivors = []
    for r in kept:
        kind = hack_type(r)
        if kind is None:
            survivors.append(tagged(r))
        else:
            report.drop(kind, r)
    registry.check(survivors)

    on_stage("guessing without chain of thought")
    tested = [i for i, r in enumerate(survivors) if r.domain not in cfg.no_cot_exempt_domains]
    if cfg.no_cot_tries and tested:
        records_tested = [survivors[i] for i in tested]
        texts = sampler.sample([r.prompt for r in records_tested], cfg.no_cot_tries, cfg.no_cot_temperature, True)
        guessed = {i for i, h in zip(tested, rewards(records_tested, texts, registry)) if max(h) > 0}
        for i in sorted(guessed):
            report.drop("guessable_without_cot", survivors[i])
        survivors = [r for i, r in enumerate(survivors) if i not in guessed]

    on_stage("estimating difficulty")
    texts = sampler.sample([r.prompt for r in survivors], cfg.samples, cfg.temperature, False)
    scores = rewards(survivors, texts, registry)
    rated = [replace(r, pass_rate=round(sum(h) / len(h), 4)) for r, h in zip(survivors, scores)]
    out = []
    for r in rated:
        if cfg.max_pass_rate is not None and r.pass_rate > cfg.max_pass_rate:
            report.drop("trivial", r)
        else:
            out.append(r)
    report.kept = len(out)
    report.domains = Counter(r.domain for r in out)
    return out, report
