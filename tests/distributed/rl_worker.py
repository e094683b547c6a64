"""The real RL stage (k15.pipeline.train_rl) on a tiny model, run on N processes under torchrun or in
one process, recording or replaying the rollouts the engine returned (see test_rl_distributed.py).

    torchrun --standalone --nproc_per_node 2 tests/distributed/rl_worker.py SFT_MODEL OUT --record FILE [--resume-out DIR] [--sft-out DIR] [key=value ...]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))  # run as a script by torchrun

from k15 import pipeline  # noqa: E402
from k15.config import apply_overrides, base  # noqa: E402
from k15.distributed import is_rank_zero, is_sharded, world_size  # noqa: E402
from k15.modules.rl import RLModule  # noqa: E402
from tests.rl.runs import MODEL  # noqa: E402

RL = ["stages=[rl]", "rl.iterations=2", "rl.prompts_per_iteration=4", "rl.samples_per_prompt=4", "rl.max_new_tokens=16",
      "rl.lr=1e-3", "rl.checkpoint_every_n_iterations=0", "rl.sample_every_n_iterations=0", "trainer.progress=false"]


class Recorder:
    """Passes generate() through to the module's engine and keeps (prompts, output) of every call."""

    def __init__(self, engine, calls: list):
        self.engine, self.calls = engine, calls

    def generate(self, prompts, params, generator=None, **kwargs):
        out = self.engine.generate(prompts, params, generator, **kwargs)
        self.calls.append((prompts, out))
        return out


class Replayer:
    """Returns recorded outputs instead of sampling; fails if the prompts are not the recorded ones."""

    def __init__(self, calls: list):
        self.calls = calls

    def generate(self, prompts, params, generator=None, **kwargs):
        recorded, out = self.calls.pop(0)
        assert prompts == recorded, "the 1-process run drew other prompts than the N-process run"
        torch.randint(0, 2**62, (1,), generator=generator)  # the seed draw of k15.distributed.ShardedEngine
        return out


class RecordingRL(RLModule):
    calls: list = []  # Recorder: appended to; Replayer: consumed
    replay = False
    facts: dict = {}  # how the run was really laid out, for the test to check

    mismatch: list = []  # rl/logp_mismatch per iteration: |rollout log-probs - this run's training log-probs|

    def on_fit_start(self) -> None:
        super().on_fit_start()
        RecordingRL.facts = {"world_size": world_size(), "sharded": is_sharded(self.model)}
        RecordingRL.mismatch = []

    def log_iteration(self, metrics, rollout, rewards) -> None:
        RecordingRL.mismatch.append(metrics.get("rl/logp_mismatch"))
        super().log_iteration(metrics, rollout, rewards)

    def rollout_engine(self):
        return Replayer(self.calls) if self.replay else Recorder(super().rollout_engine(), self.calls)


def run_rl(sft: Path, out: Path, overrides: list[str], replay: list | None = None) -> tuple[Path, list]:
    """Train RL from `sft`; returns the exported model directory and the engine calls (recorded or replayed)."""
    cfg = apply_overrides(base(), MODEL + RL + overrides)
    cfg.run.name = "distributed"
    RecordingRL.calls, RecordingRL.replay = (list(replay), True) if replay is not None else ([], False)
    pipeline.RLModule = RecordingRL  # the stage builds its module by this name
    try:
        exported = pipeline.train_rl(cfg, out, sft)
    finally:
        pipeline.RLModule = RLModule
    return exported, RecordingRL.calls


def run_rl_resumed(sft: Path, out: Path, overrides: list[str]) -> Path:
    """The same RL run resumed from the checkpoint it wrote after its first iteration (mid-epoch, as
    a killed run leaves it): run once whole into out/whole, then from that checkpoint into out/resumed."""
    cfg = apply_overrides(base(), MODEL + RL + overrides + ["rl.checkpoint_every_n_iterations=1"])
    pipeline.train_rl(cfg, out / "whole", sft)
    checkpoint = out / "whole" / "rl" / "checkpoints" / "iteration000001.ckpt"
    return pipeline.train_rl(cfg, out / "resumed", sft, checkpoint)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("sft_model", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--record", type=Path, required=True)
    parser.add_argument("--sft-out", type=Path, help="then also run sft_worker's runs into this directory (one launch, not two)")
    parser.add_argument("--resume-out", type=Path, help="then also run it stopped and resumed, into this directory")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_intermixed_args()
    _, calls = run_rl(args.sft_model, args.out, args.overrides)
    if is_rank_zero():
        torch.save({"calls": calls, **RecordingRL.facts}, args.record)
    if args.resume_out:
        run_rl_resumed(args.sft_model, args.resume_out, args.overrides)
    if args.sft_out:
        from tests.distributed.sft_worker import run_sft

        run_sft(args.sft_out)


if __name__ == "__main__":
    main()
