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
from types import SimpleNamespace

import pytest
import torch

from k15.callbacks.checkpoint import IterationCheckpoint
from k15.config import apply_overrides, base, load_yaml
from k15.data.prompts import read_prompt_set
from k15.pipeline import run_pipeline
from k15.rl.sampler import make_sampler
from k15.rl.batch import RolloutBatch
from k15.rl.workers import RolloutWorkers
from k15.rl.workers.loop import AsyncRollouts, request_seed
from k15.rl.workers.messages import RolloutResult
from k15.rollout.engine import RolloutEngine
from k15.rollout.repeat import RepeatRule
from k15.rollout.sampling import SamplingParams
from tests.rl.runs import events, run, scalars
from tests.rl.test_async_workers import PROMPTS, tiny_llama
from tests.rollout.test_engine import pick_stop_token
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
        (["rl.async.workers=1", "rl.partial.budget=8"], "is below"),  # partial rollouts: the synchronous loop's rules
        (["rl.async.workers=1", "trainer.strategy=ddp", "trainer.devices=2"], "one trainer process"),
    ]:
        with pytest.raises(Exception, match=words):
            apply_overrides(base(), bad)
    partial = apply_overrides(base(), ["rl.async.workers=1", "rl.partial.budget=48"])  # partial rollouts through workers
    assert (partial.rl.asynchronous.workers, partial.rl.partial.budget) == (1, 48)


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


# ---------------------------------------------------------------------------------------------- partial rollouts


class ScriptedPool(FakePool):
    """Honours a request's limits and history, like the engine. Row j of a new group of prompt [i] responds
    [100 + L] + [1, ..., L - 1] with L = lengths[i][j] (its first token encodes L for its continuations) and
    stops after L tokens. `eager`: generates at submit with the version published then (a worker ahead of the
    trainer); otherwise when the trainer asks for the result (a worker behind it)."""

    def __init__(self, lengths: dict[int, tuple[int, ...]], eager: bool):
        super().__init__()
        self.lengths, self.eager, self.requests = lengths, eager, []

    def submit(self, request):
        self.requests.append(request)
        self.queue.append(self._generate(request) if self.eager else request)
        return 0

    def get(self, timeout=None):
        item = self.queue.pop(0)
        return item if self.eager else self._generate(item)

    def _generate(self, request):
        tokens, reasons = [], []
        for j, (prompt, limit, h) in enumerate(zip(request.prompts, request.limits, request.history, strict=True)):
            L = self.lengths[prompt[0]][j] if h == 0 else prompt[len(prompt) - h] - 100
            new = ([100 + L] + list(range(1, L)))[h: h + limit]
            tokens.append(new)
            reasons.append("stop" if h + len(new) == L else "length")
        return RolloutResult(request.id, 0, self.version, tokens, [[-0.5] * len(t) for t in tokens], reasons, seconds=0.01)


def partial_loop(pool, max_staleness: int) -> AsyncRollouts:
    # k=2, one group per iteration, budget 4 of max_new_tokens=8: one continuation at most (4 x 2 = 8)
    return AsyncRollouts(pool, group_size=2, groups_per_iteration=1, max_staleness=max_staleness, seed=1,
                         max_new_tokens=8, budget=4, max_continuations=1)


def partial_rounds(pool, max_staleness: int, iterations: int = 2):
    queue = list(range(10))
    loop = partial_loop(pool, max_staleness)
    rounds = []
    for iteration in range(iterations):
        rounds.append(loop.run(iteration, lambda n: [queue.pop(0) for _ in range(n)], lambda i: [i], SamplingParams(max_new_tokens=8)))
        loop.publish(None, iteration + 1)
    return rounds, loop


def test_a_trajectory_continued_across_two_versions_records_both_and_is_dropped_beyond_max_staleness():
    lengths = {i: (3, 7) for i in range(10)}  # member 0 finishes in its first segment, member 1 needs a continuation
    (r0, r1), loop = partial_rounds(ScriptedPool(lengths, eager=False), max_staleness=1)
    # iteration 0 drew prompts 0 and 1 (one ahead); 0 finished both segments under version 0
    assert [g.prompt_index for g in r0.groups] == [0] and r0.groups[0].members[1].segments == [(0, 4), (0, 3)]
    assert r0.stats["rollout/partial_frac"] == 2 / 5  # rows 0.0, 0.1, 1.0, 1.1, then 0.1's continuation; 2 saved
    # prompt 1's first segment was made by version 0; its continuation, generated after the publish, by version 1
    (g1,) = r1.groups
    assert g1.prompt_index == 1 and g1.done
    assert g1.members[0].segments == [(0, 3)] and g1.members[0].tokens == [103, 1, 2]
    assert g1.members[1].segments == [(0, 4), (1, 3)] and g1.members[1].tokens == [107, 1, 2, 3, 4, 5, 6]
    assert r1.stats["async/staleness_max"] == 1.0 and loop.ages == [1] and loop.dropped == 0
    assert r1.stats["rollout/continued_frac"] > 0
    # rl.partial.loss_on=current: only the version-1 segment is in the loss (member 0 sets the baseline only)
    batch = RolloutBatch.from_groups([g1], [SimpleNamespace(id=f"p{i}") for i in range(10)], [[1]], 1, True, 0)
    assert [s.loss_start for s in batch.samples] == [3, 4]

    (_, r1), loop = partial_rounds(ScriptedPool(lengths, eager=False), max_staleness=0)
    assert loop.dropped == 1 and r1.stats["async/dropped_groups"] == 1.0  # prompt 1's group: 1 version old
    assert [g.prompt_index for g in r1.groups] == [2]  # replaced by a fresh draw, all of version 1
    assert {v for g in r1.groups for m in g.members for v, _ in m.segments} == {1}


def test_a_waiting_group_already_too_stale_is_dropped_without_a_continuation():
    pool = ScriptedPool({0: (3, 3), 1: (3, 7), 2: (3, 3), 3: (3, 3)}, eager=True)
    (r0, r1), loop = partial_rounds(pool, max_staleness=0)
    # prompt 1's first segment (version 0) arrives in iteration 1 with a member unfinished: dropped, not continued
    assert loop.dropped == 1 and [g.prompt_index for g in r1.groups] == [2]
    assert not [r for r in pool.requests if r.prompts[0][0] == 1 and r.history[0] > 0]


@pytest.mark.parametrize("collect", [False, True])
def test_greedy_segments_through_a_worker_equal_one_go(collect):
    """A trajectory generated `budget` tokens at a time by a rollout worker, each continuation resubmitted
    from the trainer's buffer, equals generating it in one go (greedy, same weights) token for token; with the
    collector thread (`collect`), continuations are resubmitted while the trainer trains (a sleep here)."""
    model = tiny_llama()
    previous = torch.get_num_threads()
    torch.set_num_threads(1)  # as the worker
    try:
        engine = RolloutEngine(model, max_batch_size=4, max_seq_len=64)
        free = engine.generate(PROMPTS, SamplingParams(max_new_tokens=15, temperature=0.0)).tokens
        params = SamplingParams(max_new_tokens=15, temperature=0.0, stop_token_ids=(pick_stop_token(free),),
                                repeat=RepeatRule(2, 3))
        one_go = engine.generate(PROMPTS, params)
        assert "stop" in one_go.finish_reasons and "length" in one_go.finish_reasons
        with RolloutWorkers(1, model, max_batch_size=2, max_seq_len=64 + 5, heartbeat_timeout_s=60.0) as pool:
            # max_staleness 1: the collector continues what the next iteration (version 1) may still train on
            loop = AsyncRollouts(pool, group_size=2, groups_per_iteration=2, max_staleness=1, seed=3,
                                 max_new_tokens=15, budget=5, max_continuations=2, collect_while_training=collect)
            queue = list(range(len(PROMPTS)))
            draw = lambda n: [queue.pop(0) for _ in range(min(n, len(queue)))]  # noqa: E731
            # one version throughout (nothing published): the second round takes the groups made ahead
            first = loop.run(0, draw, lambda i: PROMPTS[i], params)
            time.sleep(2.0)  # "training": the collector, if any, continues the groups made ahead meanwhile
            collector = loop._collector
            second = loop.run(0, draw, lambda i: PROMPTS[i], params)
            finished = first.groups + second.groups
            assert (collector is not None) == collect and not (collector and collector.is_alive())  # run stopped it
            resubmitted = second.stats.get("async/resubmitted_while_training", 0.0)
            assert resubmitted > 0 if collect else "async/resubmitted_while_training" not in second.stats
            loop.close()
            assert loop._collector is None
    finally:
        torch.set_num_threads(previous)
    assert sorted(g.prompt_index for g in finished) == list(range(len(PROMPTS)))
    assert max(len(m.segments) for g in finished for m in g.members) == 3  # some took three segments
    for group in finished:
        for m in group.members:
            assert m.tokens == one_go.tokens[group.prompt_index]
            assert m.finish_reason == one_go.finish_reasons[group.prompt_index]
            assert [n for _, n in m.segments] == [min(5, len(m.tokens) - 5 * s) for s in range(len(m.segments))]
            torch.testing.assert_close(torch.tensor(m.logprobs), torch.tensor(one_go.logprobs[group.prompt_index]),
                                       atol=1e-4, rtol=0)


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


def test_cli_async_partial_rollouts_run_and_log(tmp_path):
    run_dir = tmp_path / "run"
    proc = cli(run_dir, "stages=[rl]", "rl.async.workers=1", "rl.partial.budget=8", "rl.max_new_tokens=24",
               "rl.iterations=3")
    proc.wait(timeout=600)
    assert proc.returncode == 0, err(run_dir)[-3000:]
    curves = scalars(run_dir)
    for tag in ("async/staleness_mean", "async/staleness_max", "async/dropped_groups", "async/worker_busy_frac",
                "async/samples_per_s", "rollout/partial_frac", "rollout/continued_frac"):
        assert sorted(curves[tag]) == [1, 2, 3], tag
    assert max(curves["rollout/partial_frac"].values()) > 0  # some trajectories were continued through the workers


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
