"""The reward registry: each prompt's verifier scores its samples, keyed by sample id.

A record's `extra["verifier"]` (when present) or else its `domain` picks the verifier:
    rule   exact match of the final answer (k15.rewards.rule)    domains: arithmetic, general
    math   equivalence with math-verify (k15.rewards.math)        domain: math
           the record's extra["answer_format"] (its prompt set's format) wins over rewards.math.answer_format
    code   the program passes the record's tests in the sandbox  domain: code
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
from k15.rewards.math import MathConfig, verify_math
from k15.rewards.rule import Verdict, verify
from k15.rewards.sandbox import Sandbox, SandboxLimits

log = logging.getLogger(__name__)

ALIASES = {"arithmetic": "rule", "general": "rule", "rule": "rule", "math": "math", "code": "code"}
VERIFIER_ERROR = "verifier_error"

__all__ = ["RewardConfig", "RewardRegistry", "Verdict", "VERIFIER_ERROR", "verifier_name"]


def verifier_name(record: PromptRecord) -> str:
    name = record.extra.get("verifier") or record.domain
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
    ):
        self.sandbox_limits = sandbox_limits or SandboxLimits()
        self.math = math or MathConfig()
        self.code = code or CodeConfig()
        self._sandbox = sandbox  # started on the first code sample: no helper processes otherwise
        self._owns_sandbox = sandbox is None
        self.counts: Counter = Counter()  # "verifier/reason" -> samples so far
        self._errors_said: set[str] = set()
        self._text_verifiers: dict[str, Callable[[str, PromptRecord], Verdict]] = {
            "rule": lambda text, record: verify(text, record.answer),
            "math": lambda text, record: verify_math(text, record.answer, self.math, record.extra.get("answer_format")),
        }

    @classmethod
    def from_config(cls, cfg: RewardConfig, sandbox: Sandbox | None = None) -> RewardRegistry:
        """`sandbox`: share a running one (its limits then apply) instead of starting one."""
        return cls(sandbox_limits=cfg.sandbox, math=cfg.math, code=cfg.code, sandbox=sandbox)

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

    def score(self, items: list[tuple[str, str, PromptRecord]]) -> dict[str, Verdict]:
        """items: (sample_id, response_text, record). Returns a verdict for every sample id."""
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
        return verdicts

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
