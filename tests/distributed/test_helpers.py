"""The pieces of k15.distributed and the trainer presets that need no second process."""

import pytest
import torch

from k15.config import apply_overrides, base
from k15.data.resumable import EpochBatchSampler
from k15.distributed import block, loss_denominator, owned_rows, shard_weight
from k15.errors import ConfigError
from k15.rl.losses import rl_loss
from k15.trainer import FSDP2Strategy, make_strategy


def test_blocks_cover_every_row_once():
    for n in (0, 1, 5, 16):
        for world in (1, 2, 3):
            rows = [i for r in range(world) for i in block(n, world, r)]
            assert rows == list(range(n))


@pytest.mark.parametrize("loss", ["k15", "rest", "reinforce"])
def test_weighted_shards_average_to_the_full_gradient(loss):
    """What DDP/FSDP2 compute (mean over ranks of each rank's weighted loss gradient) is the gradient
    of the loss over the whole minibatch, also when the ranks own different numbers of rows."""
    torch.manual_seed(0)
    theta = torch.randn(7, requires_grad=True)
    x = torch.randn(11, 7)
    rewards = torch.tensor([1.0, 0, 0, 1, 1, 0, 0, 0, 1, 0, 1])
    adv, ref = rewards - rewards.mean(), torch.randn(11) * 0.1
    minibatch = torch.tensor([3, 9, 0, 4, 10, 7, 1])  # ranks own 3 and 4 of these rows (index % 2)

    def loss_of(rows):
        logp = (x[rows] @ theta).sigmoid().log()
        return rl_loss(loss, logp, logp_ref=ref[rows], adv=adv[rows], rewards=rewards[rows], tau=0.1)[0]

    full = torch.autograd.grad(loss_of(minibatch), theta)[0]
    world, total = 2, loss_denominator(loss, rewards[minibatch])
    averaged = torch.zeros(7)
    for r in range(world):
        rows = owned_rows(minibatch, world, r)
        weight = shard_weight(loss_denominator(loss, rewards[rows]), total, world)
        averaged += torch.autograd.grad(loss_of(rows) * weight, theta)[0] / world
    torch.testing.assert_close(averaged, full)


def test_ranks_read_the_one_process_batches_between_them():
    one = list(EpochBatchSampler(20, 6, seed=3))
    ranks = [list(EpochBatchSampler(20, 6, seed=3, rank=r, world=2)) for r in range(2)]
    assert [sorted(a + b) for a, b in zip(*ranks)] == [sorted(b) for b in one]
    assert all(len(a) == 3 for a in ranks[0])


def test_presets_build_their_strategies():
    t = base(trainer="fsdp2").trainer
    strategy = make_strategy(t)
    assert isinstance(strategy, FSDP2Strategy) and strategy._data_parallel_size == t.devices * t.num_nodes
    assert make_strategy(base(trainer="cpu").trainer) == "auto"
    fsdp = base(trainer="fsdp").trainer
    assert (fsdp.strategy, fsdp.precision, fsdp.activation_checkpointing, fsdp.sharded_checkpoints) == ("fsdp", "bf16-mixed", True, True)


def test_fsdp_preset_wraps_the_decoder_layers_and_checkpoints_the_blocks(monkeypatch):
    from lightning.pytorch.strategies import FSDPStrategy
    from transformers.models.llama.modeling_llama import LlamaDecoderLayer

    from k15.models.vision import Block

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # FSDPStrategy is GPU-only; building it needs none
    strategy = make_strategy(base(trainer="fsdp").trainer)
    assert isinstance(strategy, FSDPStrategy) and strategy._state_dict_type == "sharded"
    wrapped = set(strategy.kwargs["auto_wrap_policy"]._module_classes)
    assert LlamaDecoderLayer in wrapped and Block not in wrapped  # the tower stays in the root unit (k15.distributed)
    assert strategy._activation_checkpointing_kwargs


@pytest.mark.parametrize("overrides, key", [
    (["trainer=fsdp", "trainer.accelerator=cpu", "stages=[sft]"], "use trainer.strategy=fsdp2"),
    (["trainer=fsdp", "stages=[pretrain,sft,rl]"], "trainer.strategy=fsdp cannot run RL"),
    (["trainer.strategy=zero3"], "trainer.strategy must be one of"),
    (["trainer.activation_checkpointing=true"], "trainer.activation_checkpointing needs"),
    (["trainer=ddp", "trainer.sharded_checkpoints=true"], "trainer.sharded_checkpoints needs"),
    (["trainer.devices=2"], "needs trainer.strategy=ddp, fsdp or fsdp2"),
])
def test_impossible_trainer_settings_fail_with_the_key(overrides, key):
    with pytest.raises(ConfigError, match=key):
        apply_overrides(base(), overrides)
