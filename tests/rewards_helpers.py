"""Shared by tests/rewards and tests/curation: a small, fast sandbox and a process census."""

from __future__ import annotations

from pathlib import Path

import pytest

from k15.rewards.sandbox import Sandbox, SandboxLimits

FAST = dict(cpu_seconds=1, wall_seconds=2.0, memory_mb=256, max_processes=16, max_output_bytes=64 * 1024, workers=2)


@pytest.fixture(scope="module")
def sandbox():
    with Sandbox(SandboxLimits(**FAST)) as sb:
        yield sb


def processes_of(uids: set[int]) -> list[int]:
    """Pids of live processes whose real uid is in `uids`."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            status = (entry / "status").read_text()
        except OSError:
            continue
        uid_line = next((line for line in status.splitlines() if line.startswith("Uid:")), "Uid:\t-1")
        if int(uid_line.split()[1]) in uids:
            pids.append(int(entry.name))
    return pids


def slot_uids(sb: Sandbox) -> set[int]:
    return set(sb.uids) if sb.isolation == "namespaces" else set()
