"""Rollout worker processes (k15.rl.workers): exact agreement with the in-process engine, weight versions,
seqlock consistency, dead/hung worker detection, and no orphan worker after the trainer is SIGKILLed."""

from __future__ import annotations

import copy
import multiprocessing as mp
import os
import pickle
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.profiler import ProfilerActivity, profile
from transformers import LlamaConfig, LlamaForCausalLM

from k15.errors import K15Error
from k15.rl.workers import RolloutRequest, RolloutWorkers, WeightPublisher
from k15.rl.workers.worker import WorkerConfig, build_model, skeleton_of
from k15.rollout.engine import RolloutEngine
from k15.rollout.sampling import SamplingParams

ROOT = Path(__file__).resolve().parents[2]
SIZES = dict(
    vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
    num_key_value_heads=2, max_position_embeddings=2048,
    initializer_range=0.2,  # a wide init makes the random model's greedy path varied
)
PROMPTS = [[3, 4, 5], [7, 8, 9, 10, 11, 12, 13], [20], [30, 31, 32, 33]]
BATCH, SEQ = 4, 1100


def tiny_llama(seed: int = 0) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    return LlamaForCausalLM(LlamaConfig(**SIZES)).eval()


def perturbed(model: LlamaForCausalLM) -> LlamaForCausalLM:
    """The same architecture with different weights (as after an optimizer step)."""
    other = copy.deepcopy(model)
    with torch.no_grad():
        for p in other.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return other


def in_process(model, prompts, params: SamplingParams, seed: int | None = None):
    generator = None if seed is None else torch.Generator().manual_seed(seed)
    return RolloutEngine(model, max_batch_size=BATCH, max_seq_len=SEQ).generate(prompts, params, generator)


def assert_same(result, expected) -> None:
    assert result.tokens == expected.tokens
    assert result.finish_reasons == expected.finish_reasons
    for got, want in zip(result.logprobs, expected.logprobs):
        assert torch.equal(torch.tensor(got), torch.tensor(want))  # bit-exact: same code, same single thread


@pytest.fixture(scope="module")
def model():
    return tiny_llama()


@pytest.fixture(scope="module")
def pool(model):
    previous = torch.get_num_threads()
    torch.set_num_threads(1)  # the in-process reference runs on one thread, like the worker
    workers = RolloutWorkers(1, model, max_batch_size=BATCH, max_seq_len=SEQ, heartbeat_timeout_s=30.0)
    workers.wait_ready(120.0)
    yield workers
    workers.close()
    torch.set_num_threads(previous)


def test_worker_equals_in_process_engine(pool, model):
    version = pool.publish(model)
    greedy = SamplingParams(max_new_tokens=24, temperature=0.0)
    sampled = SamplingParams(max_new_tokens=24, temperature=1.0, top_p=0.9)
    pool.submit(RolloutRequest(1, PROMPTS, greedy))
    pool.submit(RolloutRequest(2, PROMPTS, sampled, seed=123))
    results = {r.id: r for r in (pool.get(60.0), pool.get(60.0))}
    assert {r.version for r in results.values()} == {version}
    assert_same(results[1], in_process(model, PROMPTS, greedy))
    assert_same(results[2], in_process(model, PROMPTS, sampled, seed=123))  # the request's seed, not the worker's state


def test_results_record_the_version_that_made_them(pool, model):
    greedy = SamplingParams(max_new_tokens=24, temperature=0.0)
    old = pool.publish(model)
    pool.submit(RolloutRequest(10, PROMPTS, greedy))
    before = pool.get(60.0)
    pool.submit(RolloutRequest(12, PROMPTS, greedy))
    again = pool.get(60.0)

    changed = perturbed(model)
    new = pool.publish(changed)
    pool.submit(RolloutRequest(11, PROMPTS, greedy))
    after = pool.get(60.0)

    assert (before.version, after.version) == (old, new) and new == old + 1
    assert_same(before, in_process(model, PROMPTS, greedy))
    assert_same(after, in_process(changed, PROMPTS, greedy))
    assert after.tokens != before.tokens  # the new weights did change the output
    assert (again.version, again.tokens) == (old, before.tokens)
    assert again.weights_s == 0.0 < after.weights_s  # weights are loaded only when the version changed


def test_weights_change_only_between_requests(pool, model):
    """A publish during a generation does not reach it: that result is all old-version tokens."""
    long = SamplingParams(max_new_tokens=1000, temperature=0.0)  # ~0.4 s of decoding
    old = pool.publish(model)
    pool.submit(RolloutRequest(20, PROMPTS, long))
    deadline = time.monotonic() + 30.0
    while pool.busy[0] != 20:  # the worker has its weights and is generating
        assert time.monotonic() < deadline
        time.sleep(0.001)
    new = pool.publish(perturbed(model))
    overlapped = pool.busy[0] == 20
    result = pool.get(60.0)
    assert overlapped, "the generation ended before the publish; the test proved nothing"
    assert result.version == old != new
    assert_same(result, in_process(model, PROMPTS, long))


def test_failed_request_is_named_and_worker_goes_on(pool, model):
    pool.submit(RolloutRequest(30, [[1] * SEQ], SamplingParams(max_new_tokens=8)))  # prompt + new > max_seq_len
    with pytest.raises(K15Error, match=r"rollout worker 0 \(pid \d+\) failed request 30: ValueError: prompt"):
        pool.get(60.0)
    pool.submit(RolloutRequest(31, PROMPTS, SamplingParams(max_new_tokens=4, temperature=0.0)))
    assert pool.get(60.0).id == 31


def allocated_bytes(fn) -> int:
    """Bytes of CPU tensor memory `fn` allocates, counting memory freed again before it returns."""
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    return sum(max(e.self_cpu_memory_usage, 0) for e in prof.events())


def test_publish_allocates_no_tensor_memory(model):
    publisher = WeightPublisher(model)
    changed = perturbed(model)
    assert allocated_bytes(lambda: publisher.publish(changed)) == 0
    assert allocated_bytes(lambda: changed.model.norm.weight.clone()) > 0  # the probe does see a temporary


def test_tied_embedding_is_stored_once_and_loads_into_a_worker_skeleton():
    torch.manual_seed(0)
    tied = LlamaForCausalLM(LlamaConfig(**SIZES, tie_word_embeddings=True)).eval()
    publisher = WeightPublisher(tied, version=7)
    embed = tied.model.embed_tokens.weight
    assert publisher.nbytes < sum(t.nbytes for t in tied.state_dict().values()) - embed.nbytes + 64 * len(tied.state_dict())
    skeleton = build_model(WorkerConfig(skeleton_of(tied), BATCH, SEQ))  # what a worker builds: empty memory
    subscriber = publisher.subscriber()
    assert subscriber.update(skeleton) == 7 and subscriber.update(skeleton) is None  # copied once per version
    assert skeleton.lm_head.weight.data_ptr() == skeleton.model.embed_tokens.weight.data_ptr()
    for name, t in tied.state_dict().items():
        assert torch.equal(skeleton.state_dict()[name], t), name


class _Rotary(nn.Module):
    def __init__(self, inv_freq: torch.Tensor):
        super().__init__()
        self.register_buffer("inv_freq", inv_freq, persistent=False)


class _HookOwner:
    """A forward hook bound to an object that cannot be copied or pickled (it holds a lock)."""

    def __init__(self):
        self.lock = threading.Lock()

    def hook(self, *args) -> None:
        pass


def test_the_skeleton_keeps_every_shared_name_and_leaves_hooks_behind():
    model = nn.Module()
    inv_freq = torch.arange(4.0)
    model.a, model.b = _Rotary(inv_freq), _Rotary(inv_freq)  # one non-persistent buffer under two names
    model.lin = nn.Linear(4, 4)
    model.register_buffer("alias", model.lin.weight, persistent=False)  # a parameter that is also a buffer
    model.lin.register_forward_hook(_HookOwner().hook)
    model.register_full_backward_hook(lambda *args: None)  # a lambda does not pickle
    skeleton = pickle.loads(pickle.dumps(skeleton_of(model)))  # as it travels to a spawned worker
    built = build_model(WorkerConfig(skeleton, BATCH, SEQ))
    assert built.a.inv_freq is built.b.inv_freq and torch.equal(built.b.inv_freq, inv_freq)
    assert built.alias is built.lin.weight  # a publish into lin.weight reaches the alias too
    assert not built.lin._forward_hooks and not built._backward_hooks and model.lin._forward_hooks  # trainer's kept


# --------------------------------------------------------------------------- seqlock consistency


class Filled(nn.Module):
    """A few 1 MB tensors, all filled with one number: a snapshot is whole iff every element is the same."""

    def __init__(self):
        super().__init__()
        self.a, self.b, self.c = (nn.Parameter(torch.zeros(256, 1024)) for _ in range(3))
        self.register_buffer("d", torch.zeros(256 * 1024))

    def fill(self, value: float) -> None:
        with torch.no_grad():
            for t in self.state_dict().values():
                t.fill_(value)


def read_snapshots(subscriber, snapshots: int, ready, out) -> None:
    """In a spawned process: read `snapshots` versions; report how many were not one whole version."""
    torch.set_num_threads(1)
    local = {name: torch.empty_like(view) for name, view in subscriber.shared.views.items()}
    ready.set()
    torn = 0
    for _ in range(snapshots):
        version = subscriber.read_into(local)
        values = torch.cat([t.flatten() for t in local.values()])
        torn += not bool((values == float(version)).all())
    out.put((torn, subscriber.retries))


@pytest.mark.parametrize("locked", [False, True], ids=["seqlock", "lock"])
def test_every_snapshot_is_one_whole_version(locked):
    ctx = mp.get_context("spawn")
    module = Filled()
    publisher = WeightPublisher(module, version=0, locked=locked, context=ctx)
    ready, out = ctx.Event(), ctx.Queue()
    reader = ctx.Process(target=read_snapshots, args=(publisher.subscriber(), 100, ready, out), daemon=True)
    reader.start()
    assert ready.wait(60.0)  # publish only once it reads: a writer spinning meanwhile slows its start
    version, deadline = 0, time.monotonic() + 60.0
    while reader.is_alive() and time.monotonic() < deadline:
        version += 1
        module.fill(float(version))
        publisher.publish(module, version)
    reader.join(10.0)
    torn, retries = out.get(timeout=10.0)
    assert torn == 0
    assert version > 50  # the writer kept publishing while the reader read
    if not locked:
        assert retries > 0, "no publish overlapped a read; the seqlock was not exercised"


# --------------------------------------------------------------------------- failures


def wait_for_error(workers: RolloutWorkers, seconds: float) -> tuple[str, float]:
    start = time.monotonic()
    while time.monotonic() - start < seconds:
        try:
            workers.check()
        except K15Error as exc:
            return str(exc), time.monotonic() - start
        time.sleep(0.05)
    raise AssertionError(f"check() found nothing in {seconds} s")


def test_killed_worker_is_named(model):
    with RolloutWorkers(2, model, max_batch_size=BATCH, max_seq_len=SEQ) as workers:
        workers.wait_ready(120.0)
        workers.check()
        pid = workers.pids[1]
        os.kill(pid, signal.SIGKILL)
        message, _ = wait_for_error(workers, 10.0)
        assert message == f"rollout worker 1 (pid {pid}) was killed by SIGKILL; 0 request(s) lost"
        with pytest.raises(K15Error, match=r"rollout worker 1 .* SIGKILL"):  # a waiting get() wakes up and says so
            workers.get(timeout=30.0)


def test_hung_worker_is_named_after_the_timeout(model):
    timeout = 1.5
    with RolloutWorkers(1, model, max_batch_size=BATCH, max_seq_len=SEQ, heartbeat_timeout_s=timeout) as workers:
        workers.wait_ready(120.0)
        time.sleep(2 * timeout)
        workers.check()  # an idle worker keeps beating
        # So does a busy one: a generation longer than the timeout beats at every decode step.
        workers.submit(RolloutRequest(1, PROMPTS * 8, SamplingParams(max_new_tokens=1000, temperature=0.0)))
        while (result := workers.get(timeout=0.05)) is None:
            workers.check()
        assert result.seconds > timeout
        pid = workers.pids[0]
        os.kill(pid, signal.SIGSTOP)  # hangs it: no more heartbeats
        message, waited = wait_for_error(workers, 10.0)
        assert message.startswith(f"rollout worker 0 (pid {pid}) hung: no heartbeat for ")
        assert message.endswith(f"s (limit {timeout:g} s)") and "\n" not in message
        assert timeout - 0.5 < waited < timeout + 2.0
        start = time.monotonic()
        workers.close()
        assert time.monotonic() - start < 3.0  # no grace is spent on a hung worker
    assert workers.processes[0].exitcode == -signal.SIGTERM  # SIGCONT let the stopped worker take its SIGTERM


# --------------------------------------------------------------------------- no orphans

PARENT = """
import sys, time, torch
from transformers import LlamaConfig, LlamaForCausalLM
from k15.rl.workers import RolloutWorkers
model = LlamaForCausalLM(LlamaConfig(**{sizes!r}))
workers = RolloutWorkers(2, model, max_batch_size=2, max_seq_len=32)
workers.wait_ready(120.0)
print(" ".join(map(str, workers.pids)), flush=True)
time.sleep(600)
"""


def alive(pid: int) -> bool:
    """Running (a zombie, waiting to be reaped by whoever inherited it, counts as gone)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except (FileNotFoundError, ProcessLookupError):
                continue
            if int(fields[1]) == pid:
                found.append(int(entry.name))
    return found


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG and /proc are Linux's")
def test_no_worker_outlives_a_killed_trainer():
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    parent = subprocess.Popen(
        [sys.executable, "-c", PARENT.format(sizes=SIZES)], cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True
    )
    try:
        line = parent.stdout.readline()
        workers = [int(p) for p in line.split()]
        assert len(workers) == 2 and all(alive(p) for p in workers), f"parent said {line!r}"
        spawned = set(children(parent.pid)) | set(workers)  # the workers, and multiprocessing's resource tracker
    finally:
        parent.kill()  # SIGKILL: no atexit, no finalizer, no close()
        parent.wait()
    deadline = time.monotonic() + 15.0
    while (left := [p for p in spawned if alive(p)]) and time.monotonic() < deadline:
        time.sleep(0.1)
    for pid in left:  # a failure must not leave them running
        os.kill(pid, signal.SIGKILL)
    assert not left, f"processes of the killed trainer still alive: {left}"
