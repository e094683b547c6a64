"""SFT on 2 CPU processes under the fsdp2 preset's strategy (FSDP2 through ModelParallelStrategy) trains
like DDP on the same 2 processes, and exports full weights that load as a Hugging Face model.

Both runs read the same global batches (each rank every 2nd example, k15.data.resumable) and average
per-rank mean losses; DDP keeps whole replicas, FSDP2 shards parameters, gradients and optimizer
state. So the two must end with the same parameters, up to float reduction order.
"""

import json

import lightning as L
import torch
from safetensors.torch import load_file

from k15.config import apply_overrides, base
from k15.models.decoder import load_decoder, load_model_and_tokenizer
from k15.models.vlm import load_vlm
from tests.distributed.sft_worker import SFT
from tests.tiny import TINY


def test_fsdp2_sft_matches_ddp_and_exports_full_weights(fsdp2_runs):
    tmp_path = fsdp2_runs["sft"]  # sft_worker.run_sft, launched with the FSDP2 RL run (conftest.py)
    facts = json.loads((tmp_path / "facts.json").read_text())
    assert facts["world_size"] == 2 and facts["sharded"] == {"DDPStrategy": False, "FSDP2Strategy": True}

    ddp = load_file(str(tmp_path / "ddp" / "sft" / "model" / "model.safetensors"))
    fsdp2 = load_file(str(tmp_path / "fsdp2" / "sft" / "model" / "model.safetensors"))
    cfg = apply_overrides(base(), TINY + SFT + ["trainer.strategy=ddp"])
    L.seed_everything(cfg.run.seed, verbose=False)  # the workers' initial model
    start = dict(load_model_and_tokenizer(cfg.model)[0].state_dict())
    assert ddp.keys() == fsdp2.keys()
    for name in ddp:
        assert fsdp2[name].shape == start[name].shape  # whole tensors, not one rank's shard
        assert (ddp[name] - start[name]).abs().max() > 1e-4, f"{name} did not train"
        torch.testing.assert_close(fsdp2[name], ddp[name], rtol=0, atol=1e-5, msg=lambda m: f"{name}: {m}")
    model = load_decoder(tmp_path / "fsdp2" / "sft" / "model")
    assert torch.equal(model.state_dict()["model.norm.weight"], fsdp2["model.norm.weight"])


def test_fsdp2_vision_tower_stage_shards_the_vlm_and_leaves_the_decoder_alone(fsdp2_runs):
    out = fsdp2_runs["sft"]
    facts = json.loads((out / "facts.json").read_text())
    assert facts["vision_sharded"] == {"FSDP2Strategy": True}  # decoder layers and vision blocks fully_shard-ed
    sft = load_file(str(out / "fsdp2" / "sft" / "model" / "model.safetensors"))
    exported = out / "vision" / "vision_tower" / "model"
    decoder = load_file(str(exported / "decoder" / "model.safetensors"))
    assert sft.keys() == decoder.keys() and all(torch.equal(sft[k], decoder[k]) for k in sft)  # frozen, gathered whole
    vlm, _ = load_vlm(exported)
    assert vlm.tower.patch_embed.weight.shape[1] == 3 * 16 * 16  # full tensors, not a rank's shard
    assert (out / "vision" / "data" / "shards" / "COMPLETE.json").is_file()  # written once, by rank 0
