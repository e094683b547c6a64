"""Fixtures of the distributed tests: a tiny SFT model, and one 2-process torchrun launch that runs RL
(whole, and stopped and resumed) and SFT under FSDP2 (and SFT under DDP) for the tests of both (one launch pays the imports once)."""

from pathlib import Path

import pytest

from tests.distributed.launch import torchrun
from tests.rl.runs import SFT, run

RL_WORKER = Path(__file__).with_name("rl_worker.py")
# minibatches of 6 random rows split unevenly across ranks: the loss weights must make up for it
FSDP2_RL = ["trainer.strategy=fsdp2", "trainer.devices=2", "rl.prompts_per_iteration=3", "rl.epochs=1", "rl.minibatches=2"]


@pytest.fixture(scope="session")
def sft_model(tmp_path_factory):
    return run(SFT, tmp_path_factory.mktemp("dist-sft") / "sft") / "sft" / "model"


@pytest.fixture(scope="session")
def fsdp2_runs(sft_model, tmp_path_factory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("fsdp2-runs")
    runs = {"rl": out / "rl", "record": out / "rollouts.pt", "resumed": out / "resumed", "sft": out / "sft"}
    torchrun(RL_WORKER, [str(sft_model), str(runs["rl"]), "--record", str(runs["record"]), "--resume-out", str(runs["resumed"]),
                         "--sft-out", str(runs["sft"]), *FSDP2_RL])
    return runs
