"""Asynchronous RL wired into the RL stage (rl.async.workers, k15.rl.workers.loop): the command line runs
and exports, TensorBoard has the async/ curves and the staleness histogram, stale groups are dropped and
counted, a killed worker stops the run in one line naming it after saving a checkpoint, a run killed or
preempted mid-way resumes to the end without replaying a finished iteration, and no worker survives."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from k15.callbacks.checkpoint import IterationCheckpoint
from k15.config import apply_overrides, base, load_yaml
from k15.data.prompts import read_prompt_set
from k15.pipeline import run_pipeline
from k15.rl.sampler import make_sampler
from k15.rl.workers.loop import AsyncRollouts, request_seed
from k15.rl.workers.messages import RolloutResult
from k15.rollout.sampling import SamplingParams
from tests.rl.runs import events, run, scalars
from tests.tiny import TINY

ROOT = Path(__file__).resolve().parents[2]
RL = ["run.threads=1", "rl.prompts_per_iteration=2", "rl.samples_per_prompt=2", "rl.max_new_tokens=20",
      "rl.num_prompts=64", "rl.sample_every_n_iterations=0", "rl.checkpoint_every_n_iterations=100"]


def cli(run_dir: Path, *overrides: str) -> subprocess.Popen:
    """The quickstart on the command line, as a user runs it; stderr goes to run_dir/../stderr (read it with `err`)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "experiments.run", "quickstart", *TINY, *RL, f"run.dir={run_dir}", *overrides],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=(run_dir.parent / "stderr").open("w"), text=True,
    )


def err(run_dir: Path) -> str:
    return (run_dir.parent / "stderr").read_text()


def resume_cli(run_dir: Path) -> subprocess.CompletedProcess:
    """`python -m experiments.run --resume RUN_DIR`, as the stopped run's line says."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "experiments.run", "--resume", str(run_dir)], cwd=ROOT, env=env,
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, timeout=600)


def drawn(run_dir: Path) -> list[dict]:
    path = run_dir / "rl" / "drawn.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []


def run_until(proc: subprocess.Popen, run_dir: Path, iterations: int) -> list[int]:
    """Wait until `iterations` RL iterations are recorded; returns the rollout workers' pids seen meanwhile."""
    deadline, workers = time.monotonic() + 240, set()
    while len(drawn(run_dir)) < iterations and proc.poll() is None and time.monotonic() < deadline:
        workers.update(spawned_children(proc.pid))
        time.sleep(0.05)
    assert proc.poll() is None and workers, err(run_dir)[-3000:]
    return sorted(workers)


def none_alive(pids: list[int], wait_s: float = 10.0) -> bool:
    """No process of `pids` is alive (a worker of a SIGKILLed trainer dies by PR_SET_PDEATHSIG, a moment later)."""
    deadline = time.monotonic() + wait_s
    while any(alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    return not any(alive(pid) for pid in pids)


def assert_continued_to_the_end(run_dir: Path, iterations: int, done: int) -> None:
    """drawn.jsonl has iterations 1..N once each (the first `done` from the killed run, the rest from the
    resume), and its prompts are the sampler's sequence with no gap and no repeat: the resume drew on from
    the checkpoint's sampler and replayed no finished iteration."""
    lines = drawn(run_dir)
    assert [line["iteration"] for line in lines] == list(range(1, iterations + 1))
    assert [line["attempt"] for line in lines] == [0] * done + [1] * (iterations - done)
    cfg = load_yaml(run_dir / "config.yaml")
    records = read_prompt_set(run_dir / "rl" / "prompts.jsonl")
    ids = [p for line in lines for p in line["prompts"]]
    sampler = make_sampler(records, cfg.rl.sampling, cfg.rl.prompts_per_iteration, cfg.run.seed)
    assert ids == [records[i].id for i in sampler.draw(len(ids))]


def spawned_children(pid: int) -> list[int]:
    """Processes whose parent is `pid` and that multiprocessing started with spawn (rollout workers)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            cmdline = (entry / "cmdline").read_bytes()
        except (OSError, IndexError, ValueError):
            continue
        if ppid == pid and b"spawn_main" in cmdline:
            found.append(int(entry.name))
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


# ---------------------------------------------------------------------------------------------- config


def test_async_key_is_an_alias_and_validated():
    cfg = apply_overrides(base(), ["rl.async.workers=2", "rl.async.max_staleness=0", "rl.async.heartbeat_timeout_s=9"])
    assert (cfg.rl.asynchronous.workers, cfg.rl.asynchronous.max_staleness, cfg.rl.asynchronous.heartbeat_timeout_s) == (2, 0, 9.0)
    assert base().rl.asynchronous.workers == 0  # today's loop stays the default
    for bad, words in [
        (["rl.async.workers=-1"], "rl.async.workers must be >= 0"),
        (["rl.async.max_staleness=-1"], "rl.async.max_staleness must be >= 0"),
        (["rl.async.workers=1", "rl.partial.budget=48"], "partial rollouts"),
        (["rl.async.workers=1", "trainer.strategy=ddp", "trainer.devices=2"], "one trainer process"),
    ]:
        with pytest.raises(Exception, match=words):
            apply_overrides(base(), bad)


# ---------------------------------------------------------------------------------------------- the loop


class FakePool:
    """Generates each request at submit time with the newest published version (a worker that is always ahead)."""

    def __init__(self):
        self.version, self.queue, self.checks = 0, [], 0

    def __len__(self):
        return 1

    def check(self):
        self.checks += 1

    def submit(self, request):
        tokens = [[5, 6, 7][: 1 + j] for j in range(len(request.prompts))]
        self.queue.append(RolloutResult(request.id, 0, self.version, tokens, [[-0.5] * len(t) for t in tokens],
                                        ["stop"] * len(tokens), seconds=0.01))
        return 0

    def get(self, timeout=None):
        return self.queue.pop(0)

    def publish(self, model, version):
        self.version = version

    def close(self):
        pass


def two_iterations(max_staleness: int):
    pool, drawn = FakePool(), []

    def draw(n):
        drawn.extend(range(len(drawn), len(drawn) + n))
        return drawn[-n:]

    loop = AsyncRollouts(pool, group_size=2, groups_per_iteration=2, max_staleness=max_staleness, seed=1)
    params = SamplingParams(max_new_tokens=4)
    rounds = []
    for iteration in range(2):
        rounds.append(loop.run(iteration, draw, lambda i: [1, 2, 3], params))
        loop.publish(None, iteration + 1)  # after the iteration's optimizer steps
    return rounds, loop, pool


def test_max_staleness_0_drops_groups_of_an_older_version_and_counts_them():
    rounds, loop, pool = two_iterations(max_staleness=0)
    assert pool.checks == 2  # every iteration looks at the workers first
    second = rounds[1]
    # iteration 0 submitted 4 groups (2 ahead) under version 0; iteration 1 cannot use the 2 left over
    assert loop.dropped == 2 and second.stats["async/dropped_groups"] == 2.0
    assert [m.segments[0][0] for g in second.groups for m in g.members] == [1, 1, 1, 1]  # all made by version 1
    assert second.stats["async/staleness_max"] == 0.0
    assert len(second.groups) == 2 and all(len(g.members) == 2 for g in second.groups)
    assert len({g.id for r in rounds for g in r.groups}) == 4  # group ids never repeat


def test_max_staleness_1_trains_on_the_groups_made_ahead():
    rounds, loop, _ = two_iterations(max_staleness=1)
    assert loop.dropped == 0
    second = rounds[1]
    assert [m.segments[0][0] for g in second.groups for m in g.members] == [0, 0, 0, 0]
    assert second.stats["async/staleness_mean"] == 1.0 == second.stats["async/staleness_max"]
    group = second.groups[0]  # the worker's tokens and log-probs, as the result carried them
    assert group.members[1].tokens == [5, 6] and group.members[1].logprobs == [-0.5, -0.5] and group.done


def test_request_seed_is_deterministic_and_distinct():
    assert request_seed(1, 2, 3, 4) == request_seed(1, 2, 3, 4)
    assert len({request_seed(1, i, s, 7) for i in range(20) for s in range(20)}) == 400


# ---------------------------------------------------------------------------------------------- end to end


def test_cli_async_run_exports_logs_and_leaves_no_worker(tmp_path):
    run_dir = tmp_path / "run"
    proc = cli(run_dir, "stages=[pretrain,sft,rl]", "rl.async.workers=1", "rl.iterations=3")
    workers: set[int] = set()
    while proc.poll() is None:  # the rollout workers, seen while the run lives
        workers.update(spawned_children(proc.pid))
        time.sleep(0.2)
    assert proc.returncode == 0, err(run_dir)[-3000:]
    assert (run_dir / "rl" / "model" / "config.json").is_file()
    curves = scalars(run_dir)
    for tag in ("async/staleness_mean", "async/staleness_max", "async/dropped_groups", "async/worker_busy_frac",
                "async/trainer_wait_s", "async/samples_per_s"):
        assert sorted(curves[tag]) == [1, 2, 3], tag
    assert 0.0 <= curves["async/worker_busy_frac"][3] <= 1.0
    histograms = events(run_dir).Histograms("async/staleness")  # one value per trained group, each iteration
    assert [h.step for h in histograms] == [1, 2, 3] and all(h.histogram_value.num == 2 for h in histograms)
    assert histograms[-1].histogram_value.max == curves["async/staleness_max"][3]
    assert workers, "no rollout worker was ever seen"
    assert not [pid for pid in workers if alive(pid)]


def test_killed_worker_saves_a_checkpoint_stops_in_one_line_and_the_run_resumes(tmp_path):
    run_dir, iterations = tmp_path / "run", 30
    proc = cli(run_dir, "stages=[rl]", "rl.async.workers=1", f"rl.iterations={iterations}")
    workers = run_until(proc, run_dir, 2)  # mid-run: the worker has built its engine and served requests
    os.kill(workers[0], signal.SIGKILL)
    proc.wait(timeout=120)
    assert proc.returncode == 2, err(run_dir)[-3000:]
    lines = err(run_dir).strip().splitlines()
    assert lines[-1].startswith(f"error: rollout worker 0 (pid {workers[0]}) was killed by SIGKILL"), lines[-1]
    ckpt = run_dir / "rl" / "checkpoints" / "last.ckpt"
    done = torch.load(ckpt, weights_only=False)["k15_rl"]["iteration"]  # the last finished iteration
    assert 2 <= done < iterations and len(drawn(run_dir)) == done
    assert lines[-2] == (f"stopped in rl after iteration {done}: saved {ckpt}; "
                         f"continue with: python -m experiments.run --resume {run_dir}"), lines[-2]
    assert none_alive(workers)

    resumed = resume_cli(run_dir)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"rl: resumed at iteration {done} of {iterations}" in resumed.stderr
    assert_continued_to_the_end(run_dir, iterations, done)
    assert (run_dir / "rl" / "model" / "config.json").is_file()
    assert not spawned_children(os.getpid())


@pytest.mark.parametrize("how", ["SIGTERM", "SIGKILL"])
def test_a_killed_trainer_resumes_with_only_the_remaining_iterations(tmp_path, how):
    """SIGTERM: preempted at the next iteration's end (exit 143); SIGKILL: the trainer dies at once and the
    resume starts from the periodic checkpoint (drawn.jsonl is cut back to it). Either way the workers die
    with the trainer, and async/dropped_groups goes on from the checkpoint's count."""
    run_dir, iterations = tmp_path / "run", 24
    proc = cli(run_dir, "stages=[rl]", "rl.async.workers=1", f"rl.iterations={iterations}",
               "rl.async.max_staleness=0", "rl.checkpoint_every_n_iterations=2")  # staleness 0: groups made ahead drop
    workers = run_until(proc, run_dir, 5)
    os.kill(proc.pid, getattr(signal, how))
    proc.wait(timeout=120)
    assert proc.returncode == (143 if how == "SIGTERM" else -signal.SIGKILL), err(run_dir)[-3000:]
    assert none_alive(workers), "a rollout worker outlived its trainer"
    ckpt = torch.load(run_dir / "rl" / "checkpoints" / "last.ckpt", weights_only=False)["k15_rl"]
    done = ckpt["iteration"]
    assert 2 <= done < iterations
    if how == "SIGTERM":
        assert err(run_dir).strip().splitlines()[-1].startswith(f"preempted: SIGTERM at rl iteration {done}; saved ")

    resumed = resume_cli(run_dir)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert_continued_to_the_end(run_dir, iterations, done)
    dropped = scalars(run_dir)["async/dropped_groups"]  # the resumed run's steps overwrite the killed run's
    assert dropped[done] == ckpt["async_dropped"]
    assert all(dropped[i] <= dropped[i + 1] for i in range(1, iterations)), dropped  # counted on, not anew
    assert not spawned_children(os.getpid())


class Interrupted(Exception):
    pass


def test_a_failed_fit_closes_the_workers_and_a_resume_starts_them_at_its_iteration(tmp_path, monkeypatch):
    overrides = ["stages=[rl]", *RL, "rl.async.workers=1", "rl.async.max_staleness=0", "rl.iterations=5",
                 "rl.checkpoint_every_n_iterations=3"]
    save = IterationCheckpoint.on_train_batch_end

    def crash_after_first_checkpoint(self, trainer, pl_module, *args):
        save(self, trainer, pl_module, *args)
        if pl_module.iteration == 3:
            raise Interrupted

    monkeypatch.setattr(IterationCheckpoint, "on_train_batch_end", crash_after_first_checkpoint)
    with pytest.raises(Interrupted):
        run(overrides, tmp_path / "cut")
    monkeypatch.undo()
    assert not spawned_children(os.getpid()), "a worker outlived the failed fit"
    cut = tmp_path / "cut"
    assert torch.load(cut / "rl" / "checkpoints" / "last.ckpt", weights_only=False)["k15_rl"]["iteration"] == 3
    run_pipeline(load_yaml(cut / "config.yaml"), cut, resume=True)
    assert not spawned_children(os.getpid())
    curves = scalars(cut)
    assert sorted(curves["async/staleness_max"]) == [1, 2, 3, 4, 5]
    # the resumed pool publishes version 3 at iteration 3 (logged as step 4): nothing it makes is stale
    # (a pool started at version 0 would make every group 3 versions old, and max_staleness=0 drops those);
    # the drop count goes on from the checkpoint's
    assert curves["async/staleness_max"][4] == 0.0 and curves["async/dropped_groups"][4] == curves["async/dropped_groups"][3]
    assert (cut / "rl" / "model" / "config.json").is_file()
