"""A tiny SFT model shared by the RL runs of this folder (built once per session, ~1 s)."""

import pytest

from tests.rl.runs import SFT, run


@pytest.fixture(scope="session")
def sft_model(tmp_path_factory):
    return run(SFT, tmp_path_factory.mktemp("rl-sft") / "sft") / "sft" / "model"
