"""SFT (k15.pipeline.train_sft) from scratch on a tiny model, once under DDP and once under FSDP2, then the
VLM's tower-only stage under FSDP2 on that model, in the same N processes started by torchrun (see test_sft_distributed.py; rl_worker.py --sft runs it too).

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
from k15 import vision_stages  # noqa: E402
from k15.modules.vlm_train import VLMTrainModule  # noqa: E402
from tests.tiny import TINY, VISION_SMOKE  # noqa: E402

SFT = ["stages=[sft]", "sft.max_steps=3", "sft.batch_size=8", "sft.num_examples=64", "sft.optim.warmup_steps=1",
       "trainer.sample_every_n_steps=0", "trainer.devices=2", "run.threads=1"]


class Probe(SFTModule):
    sharded: dict = {}

    def on_fit_start(self) -> None:
        Probe.sharded[self.trainer.strategy.__class__.__name__] = is_sharded(self.model)


class VisionProbe(VLMTrainModule):
    sharded: dict = {}

    def on_fit_start(self) -> None:
        VisionProbe.sharded[self.trainer.strategy.__class__.__name__] = is_sharded(self.model)


VISION = ["stages=[vision_tower]", "trainer.devices=2", "trainer.strategy=fsdp2", "run.threads=1",
          "trainer.progress=false", "vision_tower.ocr_weight=1", "vlm.projector.kind=embedding_softmax"]


def run_vision(out: Path) -> None:
    """The tower-only stage under FSDP2 on the FSDP2 SFT model: rank 0 writes the shards, all train, rank 0 exports."""
    vision_stages.VLMTrainModule = VisionProbe
    try:
        cfg = apply_overrides(base(), [o for o in TINY if not o.startswith("stages=")] + VISION_SMOKE + VISION)
        vision_stages.train_vision_stage(cfg, out / "vision", "vision_tower", out / "fsdp2" / "sft" / "model")
    finally:
        vision_stages.VLMTrainModule = VLMTrainModule


def run_sft(out: Path) -> None:
    pipeline.SFTModule = Probe  # to see whether FSDP2 really sharded the model
    try:
        for strategy in ("ddp", "fsdp2"):
            cfg = apply_overrides(base(), TINY + SFT + [f"trainer.strategy={strategy}"])
            pipeline.train_sft(cfg, out / strategy, None)
    finally:
        pipeline.SFTModule = SFTModule
    run_vision(out)
    if is_rank_zero():
        facts = {"world_size": world_size(), "sharded": Probe.sharded, "vision_sharded": VisionProbe.sharded}
        (out / "facts.json").write_text(json.dumps(facts))


if __name__ == "__main__":
    run_sft(Path(sys.argv[1]))
