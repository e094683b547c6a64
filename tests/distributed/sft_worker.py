"""SFT (k15.pipeline.train_sft) from scratch on a tiny model, once under DDP and once under FSDP2, in the
same N processes started by torchrun (see test_sft_distributed.py; rl_worker.py --sft runs it too).

    torchrun --standalone --nproc_per_node 2 tests/distributed/sft_worker.py OUT
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))  # run as a script by torchrun

from k15 import pipeline  # noqa: E402
from k15.config import apply_overrides, base  # noqa: E402
from k15.distributed import is_rank_zero, is_sharded, world_size  # noqa: E402
from k15.modules.sft import SFTModule  # noqa: E402
from tests.tiny import TINY  # noqa: E402

SFT = ["stages=[sft]", "sft.max_steps=3", "sft.batch_size=8", "sft.num_examples=64", "sft.optim.warmup_steps=1",
       "trainer.sample_every_n_steps=0", "trainer.devices=2", "run.threads=1"]


class Probe(SFTModule):
    sharded: dict = {}

    def on_fit_start(self) -> None:
        Probe.sharded[self.trainer.strategy.__class__.__name__] = is_sharded(self.model)


def run_sft(out: Path) -> None:
    pipeline.SFTModule = Probe  # to see whether FSDP2 really sharded the model
    try:
        for strategy in ("ddp", "fsdp2"):
            cfg = apply_overrides(base(), TINY + SFT + [f"trainer.strategy={strategy}"])
            pipeline.train_sft(cfg, out / strategy, None)
    finally:
        pipeline.SFTModule = SFTModule
    if is_rank_zero():
        (out / "facts.json").write_text(json.dumps({"world_size": world_size(), "sharded": Probe.sharded}))


if __name__ == "__main__":
    run_sft(Path(sys.argv[1]))
