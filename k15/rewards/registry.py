"""The reward registry: each prompt's verifier scores its samples, keyed by sample id.

A record's `extra["verifier"]` (when present) or else its `domain` picks the verifier:
    rule   exact match of the final answer (k15.rewards.rule)    domains: arithmetic, general
    math   equivalence with math-verify (k15.rewards.math)        domain: math
           the record's extra["answer_format"] (its prompt set's format) wins over rewards.math.answer_format
    code   the program passes the record's tests in the sandbox  domain: code
    freeform  the final answer states the reference's value (k15.rewards.freeform)  domain: freeform
A learned reward model (`judge`, k15.reward_models.judge; rewards.rm) replaces the reward of the
prompts in its domains: their verifier still runs, as the ground truth, and `last_rm` counts, for
the latest batch, how often the RM and the verifier disagree (RL logs it as reward/rm_disagreement).
Its verdicts are counted as "<rm>/correct|wrong|unparsed"; an unparsed verdict is reward 0.
A verifier that raises gives THAT sample reward 0 with reason "verifier_error", logged and counted;
every other sample keeps its own verdict (rewards are looked up by id, never by position). Code
samples run together in the sandbox pool, so their tests execute in parallel.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable
from concurrent.futures import Future

from k15.config import RewardConfig
from k15.data.prompts import PromptRecord
from k15.errors import DataError, K15Error
from k15.rewards.answers import FORMATS
from k15.rewards.code import CodeConfig, check_tests, extract_program, judge, reward_of
from k15.rewards.freeform import verify_freeform
from k15.rewards.math import MathConfig, verify_math
from k15.rewards.rule import Verdict, verify
from k15.rewards.sandbox import Sandbox, SandboxLimits

log = logging.getLogger(__name__)

ALIASES = {"arithmetic": "rule", "general": "rule", "rule": "rule", "math": "math", "code": "code", "freeform": "freeform"}
VERIFIER_ERROR = "verifier_error"

__all__ = ["RewardConfig", "RewardRegistry", "Verdict", "VERIFIER_ERROR", "domain_of", "verifier_name"]


def domain_of(record: PromptRecord) -> str:
    """The name that picks a record's verifier (and, in rewards.rm.domains, the reward model)."""
    return record.extra.get("verifier") or record.domain


def verifier_name(record: PromptRecord) -> str:
    name = domain_of(record)
    if name not in ALIASES:
        raise DataError(f"prompt {record.id}: no verifier for {name!r} (known: {', '.join(sorted(ALIASES))})")
    return ALIASES[name]


class RewardRegistry:
    def __init__(
        self,
        sandbox_limits: SandboxLimits | None = None,
        math: MathConfig | None = None,
        code: CodeConfig | None = None,
        sandbox: Sandbox | None = None,
        judge=None,
    ):
        self.sandbox_limits = sandbox_limits or SandboxLimits()
        self.math = math or MathConfig()
        self.code = code or CodeConfig()
        self._sandbox = sandbox  # started on the first code sample: no helper processes otherwise
        self._owns_sandbox = sandbox is None
        self.counts: Counter = Counter()  # "verifier/reason" -> samples so far
        self._errors_said: set[str] = set()
        self.judge = judge  # a k15.reward_models.judge.RewardJudge, or None: the verifiers give every reward
        self.last_rm: dict[str, int] = {}  # the latest score(): judged, rm_correct, truth_correct, disagree, false_*
        self._text_verifiers: dict[str, Callable[[str, PromptRecord], Verdict]] = {
            "rule": lambda text, record: verify(text, record.answer),
            "math": lambda text, record: verify_math(text, record.answer, self.math, record.extra.get("answer_format")),
            "freeform": lambda text, record: verify_freeform(text, record.answer),
        }

    @classmethod
    def from_config(cls, cfg: RewardConfig, sandbox: Sandbox | None = None, judge=None) -> RewardRegistry:
        """`sandbox`: share a running one (its limits then apply) instead of starting one; `judge`: a loaded
        reward model for rewards.rm's domains (the caller loads it: evaluation never gets one)."""
        return cls(sandbox_limits=cfg.sandbox, math=cfg.math, code=cfg.code, sandbox=sandbox, judge=judge)

    @property
    def sandbox(self) -> Sandbox:
        if self._sandbox is None:
            self._sandbox = Sandbox(self.sandbox_limits)
        return self._sandbox

    def check(self, records: list[PromptRecord]) -> None:
        """Fail early, naming the prompt, when a record has no verifier, (code) no usable tests or (math) an
        unknown answer format."""
        for r in records:
            name = verifier_name(r)
            if name == "code":
                check_tests(r.tests, f"prompt {r.id}")
            if name == "math" and r.extra.get("answer_format") and r.extra["answer_format"] not in FORMATS:
                raise DataError(f"prompt {r.id}: unknown answer_format {r.extra['answer_format']!r} "
                                f"(known: {', '.join(FORMATS)})")

    def score(self, items: list[tuple[str, str, PromptRecord]], judged: set[str] | None = None) -> dict[str, Verdict]:
        """items: (sample_id, response_text, record). Returns a verdict for every sample id. With a reward
        model, the samples of its domains (among `judged`, default all) get its verdict instead."""
        ids = [sid for sid, _, _ in items]
        if len(set(ids)) != len(ids):
            raise K15Error(f"sample ids must be unique; repeated: {sorted({i for i in ids if ids.count(i) > 1})[:5]}")
        verdicts: dict[str, Verdict] = {}
        pending: list[tuple[str, str, list[Future], list[dict]]] = []
        for sid, text, record in items:
            name = "unknown"
            try:
                name = verifier_name(record)
                if name == "code":
                    job = self._start_code(text, record)
                    if isinstance(job, Verdict):
                        self._set(verdicts, sid, name, job)
                    else:
                        pending.append((sid, *job))
                else:
                    self._set(verdicts, sid, name, self._text_verifiers[name](text, record))
            except Exception as exc:  # noqa: BLE001 -- one sample's failure must not touch the others
                self._error(verdicts, sid, name, exc)
        for sid, program, futures, tests in pending:
            try:
                result = judge([f.result() for f in futures], tests, sum(f.result().seconds for f in futures))
                self._set(verdicts, sid, "code", Verdict(reward_of(result, self.code), result.status, program))
            except Exception as exc:  # noqa: BLE001
                self._error(verdicts, sid, "code", exc)
        if self.judge is not None:
            self._judge(items, verdicts, judged)
        return verdicts

    def _judge(self, items: list[tuple[str, str, PromptRecord]], verdicts: dict[str, Verdict], judged: set[str] | None) -> None:
        """The reward model's verdicts replace the verifier's for its domains; the disagreement is counted."""
        from k15.reward_models.judge import example_of  # the RM code imports this package

        mine = [(sid, text, r) for sid, text, r in items
                if domain_of(r) in self.judge.domains and (judged is None or sid in judged)]
        self.last_rm = {"judged": 0, "rm_correct": 0, "truth_correct": 0, "disagree": 0, "false_positive": 0,
                        "false_negative": 0}
        if not mine:
            return
        try:
            said = self.judge.judge([example_of(r.prompt, r.answer, text) for _, text, r in mine])
        except Exception as exc:  # noqa: BLE001 -- the RM failed on the batch: each of its samples is an error
            for sid, _, _ in mine:
                self._error(verdicts, sid, self.judge.name, exc)
            return
        for (sid, _, _), j in zip(mine, said, strict=True):
            truth = verdicts[sid].reward == 1.0
            rm = bool(j.correct)  # unparsed (None) is reward 0
            self.last_rm["judged"] += 1
            self.last_rm["rm_correct"] += rm
            self.last_rm["truth_correct"] += truth
            self.last_rm["disagree"] += rm != truth
            self.last_rm["false_positive"] += rm and not truth
            self.last_rm["false_negative"] += truth and not rm
            self._set(verdicts, sid, self.judge.name, Verdict(float(rm), j.reason, verdicts[sid].answer))

    def _start_code(self, text: str, record: PromptRecord) -> Verdict | tuple[str, list[Future], list[dict]]:
        tests = check_tests(record.tests, f"prompt {record.id}")
        program, reason = extract_program(text)
        if program is None:
            return Verdict(0.0, reason, None)
        return program, [self.sandbox.submit(program, t["input"]) for t in tests], tests

    def _set(self, verdicts: dict, sid: str, name: str, verdict: Verdict) -> None:
        verdicts[sid] = verdict
        self.counts[f"{name}/{verdict.reason}"] += 1

    def _error(self, verdicts: dict, sid: str, name: str, exc: Exception) -> None:
        said = f"{type(exc).__name__}: {exc}"
        if said not in self._errors_said:  # the same failure on every sample (a refusing sandbox): said once
            self._errors_said.add(said)
            log.warning("verifier %s failed on sample %s: %s (the same error on later samples is counted, not repeated)",
                        name, sid, said)
        self._set(verdicts, sid, name, Verdict(0.0, VERIFIER_ERROR, None))

    def close(self) -> None:
        if self._sandbox is not None and self._owns_sandbox:
            self._sandbox.close()
            self._sandbox = None

    def __enter__(self) -> RewardRegistry:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
