"""RL on 2 CPU processes (DDP, FSDP2) makes the same update as on 1 process.

Design (see k15/distributed.py): on N processes each rank samples its block of the iteration's
trajectories with its own random stream, so N-process rollouts are *not* the 1-process rollouts,
only samples from the same policy. What must hold exactly is everything after sampling: the
gathered rollouts are the same on every rank, and the update on them (rows split across ranks,
losses weighted, gradients averaged by DDP / FSDP2) is the 1-process update on the same batch.
So the 2-process run records what its engine returned (gathered) in every iteration, and a
1-process run replays exactly those rollouts: it must draw the same prompts (checked call by call)
and end with the same parameters; its training log-probs must match the log-probs the 2-process
engines returned (so those engines held the right, gathered weights). Both runs are the real stage, k15.pipeline.train_rl, 2 iterations,
and the 2-process parameters are read from its export (written by rank 0 from the full weights).
"""

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.distributed.conftest import FSDP2_RL, RL_WORKER
from tests.distributed.launch import torchrun
from tests.distributed.rl_worker import RecordingRL, run_rl
from tests.rl.runs import scalars


def weights(model_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(str(model_dir / "model.safetensors"))


def check_like_one_process(sft_model: Path, record: Path, two_dir: Path, overrides: list[str], sharded: bool, tmp_path: Path):
    two = torch.load(record, weights_only=False)
    assert two["world_size"] == 2
    assert two["sharded"] == sharded  # FSDP2 really sharded the parameters (DDP did not)
    assert len(two["calls"]) == 2  # one engine call per iteration

    rl_overrides = [o for o in overrides if not o.startswith("trainer.")]
    exported, left = run_rl(sft_model, tmp_path / "one", rl_overrides, replay=two["calls"])
    assert left == []  # every recorded iteration was replayed, with the same prompts
    # The 2-process engines sampled with the weights this run trains (FSDP2: gathered from shards),
    # also after the first update: their log-probs are the ones this run recomputes.
    assert all(m is not None and m < 1e-4 for m in RecordingRL.mismatch), RecordingRL.mismatch
    one, two_w, start = weights(exported), weights(two_dir / "rl" / "model"), weights(sft_model)
    assert one.keys() == two_w.keys()
    for name in one:
        moved = (one[name] - start[name]).abs().max()
        assert moved > 1e-4, f"{name} did not train"  # so that equality below means something
        torch.testing.assert_close(two_w[name], one[name], rtol=0, atol=1e-5, msg=lambda m: f"{name}: {m}")


def test_fsdp2_rl_updates_like_one_process(sft_model, fsdp2_runs, tmp_path):
    check_like_one_process(sft_model, fsdp2_runs["record"], fsdp2_runs["rl"], FSDP2_RL, True, tmp_path)


def test_fsdp2_rl_resumes_bit_for_bit(fsdp2_runs):
    """Resumed from the checkpoint written after iteration 1 (full weights in one file, the sampler,
    buffer and RNG state), the FSDP2 run ends exactly where the uninterrupted one does."""
    whole = weights(fsdp2_runs["resumed"] / "whole" / "rl" / "model")
    resumed = weights(fsdp2_runs["resumed"] / "resumed" / "rl" / "model")
    recorded = weights(fsdp2_runs["rl"] / "rl" / "model")  # the same run, recording its rollouts
    logged = {name: set(scalars(fsdp2_runs["resumed"] / name)["perf/iteration_s"]) for name in ("whole", "resumed")}
    assert logged == {"whole": {1, 2}, "resumed": {2}}  # the resumed run trained iteration 2 only
    for name in whole:
        assert torch.equal(whole[name], recorded[name]), name
        assert torch.equal(resumed[name], whole[name]), name


@pytest.mark.slow  # ~25 s on a loaded 2-core machine; the fsdp2 test runs the same RL code paths and more
def test_ddp_rl_updates_like_one_process(sft_model, tmp_path):
    overrides = ["trainer.strategy=ddp", "trainer.devices=2", "rl.epochs=2", "rl.minibatches=1"]  # first pass = reference pass
    torchrun(RL_WORKER, [str(sft_model), str(tmp_path / "two"), "--record", str(tmp_path / "rollouts.pt"), *overrides])
    check_like_one_process(sft_model, tmp_path / "rollouts.pt", tmp_path / "two", overrides, False, tmp_path)
