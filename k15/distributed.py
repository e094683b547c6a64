"""What the stages need to run on N processes: rank and world size, who owns which rows, gathering
rollouts, FSDP2 sharding in `configure_model`, and the full (unsharded) weights of a sharded model.

RL under N processes (see docs/distributed.md):
- every rank draws the same prompts (the sampler's state is identical everywhere);
- rank r generates a contiguous block of the iteration's trajectories (`ShardedEngine`) with its own
  random stream, derived from the shared generator, and the blocks are gathered to every rank, so
  the replay buffer, the scores, the sampler and the advantages stay identical on every rank;
- each rank trains on the rows it owns (`owned_rows`), its loss weighted so that the averaged
  gradient (DDP all-reduce, FSDP2 reduce-scatter) equals the one-process gradient over all rows;
- the rollout engine holds a full copy of the weights on every rank (`full_weights`).
With one process none of this runs: the code path and its random streams are those of before.
"""

from __future__ import annotations

import copy
import os
import weakref
from typing import TYPE_CHECKING

import torch
import torch.distributed as dist
from torch import nn

if TYPE_CHECKING:
    from k15.rollout.sampling import SamplingParams


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def is_rank_zero() -> bool:
    return launch_rank() == 0


def launch_rank() -> int:
    """This process's global rank, also before the process group exists (run directories are made
    first): torchrun sets RANK, SLURM sets SLURM_PROCID, Lightning's own launcher gives the processes
    it starts LOCAL_RANK (one node)."""
    if is_distributed():
        return dist.get_rank()
    for var in ("RANK", "SLURM_PROCID", "LOCAL_RANK"):
        if os.environ.get(var, "").isdigit():
            return int(os.environ[var])
    return 0


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def block(n: int, world: int, r: int) -> range:
    """Rank r's contiguous share of n items; shares differ in size by at most one."""
    return range(n * r // world, n * (r + 1) // world)


def all_gather_objects(obj) -> list:
    """[obj of rank 0, obj of rank 1, ...] on every rank (pickled; for small Python objects)."""
    if not is_distributed():
        return [obj]
    out = [None] * world_size()
    dist.all_gather_object(out, obj)
    return out


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """The sum over ranks of a (detached) tensor, on every rank."""
    t = t.detach().clone()
    if is_distributed():
        dist.all_reduce(t)
    return t


# ------------------------------------------------------------------------------------------------
# Rollouts


class ShardedEngine:
    """A rollout engine seen by k15.rollout.partial as if it generated every row: this rank generates
    its block of rows and the outputs of all ranks are gathered, in the caller's order.

    Random numbers: one seed is drawn from the shared generator (the same draw on every rank, so it
    stays in step everywhere) and rank r samples with a generator seeded by (seed, r). A row's
    samples therefore depend on the world size (which block it falls in), not only on the seed:
    N-process rollouts are not the 1-process ones, only drawn from the same policy.
    """

    def __init__(self, engine, world: int, r: int):
        self.engine, self.world, self.rank = engine, world, r

    def generate(self, prompts: list[list[int]], params: SamplingParams, generator: torch.Generator | None = None, *,
                 limits=None, history=None):
        from k15.rollout.engine import RolloutOutput

        seed = int(torch.randint(0, 2**62, (1,), generator=generator))
        mine = block(len(prompts), self.world, self.rank)
        local = RolloutOutput([], [], [])
        if len(mine):
            own = torch.Generator(device=self.engine.device).manual_seed(seed + 1_000_003 * self.rank)
            local = self.engine.generate(
                [prompts[i] for i in mine], params, own,
                limits=None if limits is None else [limits[i] for i in mine],
                history=None if history is None else [history[i] for i in mine],
            )
        out = RolloutOutput([], [], [])
        for part in all_gather_objects((local.tokens, local.logprobs, local.finish_reasons)):
            out.tokens += part[0]
            out.logprobs += part[1]
            out.finish_reasons += part[2]
        return out


# ------------------------------------------------------------------------------------------------
# Training rows


def owned_rows(rows: torch.Tensor, world: int | None = None, r: int | None = None) -> torch.Tensor:
    """The rows (sample indices) this rank trains on: index % world == rank. Ownership follows the
    index, not the position in a minibatch, so a rank's reference log-probs from the first pass are
    for the same rows in every epoch."""
    world = world_size() if world is None else world
    r = rank() if r is None else r
    return rows if world == 1 else rows[rows % world == r]


def loss_denominator(loss: str, rewards: torch.Tensor) -> int:
    """How many samples each loss of k15.rl.losses averages over: all of them, or (rest) the correct ones."""
    return int((rewards > 0.5).sum()) if loss == "rest" else int(rewards.numel())


def shard_weight(local: int, total: int, world: int) -> float:
    """Scale of a rank's mean loss so that the mean over ranks of the gradients (what DDP and FSDP
    reduce to) is the gradient of the loss averaged over all `total` rows: local * world / total."""
    return local * world / total if total > 0 else 0.0


# ------------------------------------------------------------------------------------------------
# FSDP2 and full weights


def block_classes() -> set[type[nn.Module]]:
    """The repeated blocks that FSDP wraps and checkpoints one by one: decoder layers and vision blocks."""
    from transformers.models.llama.modeling_llama import LlamaDecoderLayer
    from transformers.models.qwen2.modeling_qwen2 import Qwen2DecoderLayer

    from k15.models.vision import Block

    return {LlamaDecoderLayer, Qwen2DecoderLayer, Block}


def shard_unit_classes() -> set[type[nn.Module]]:
    """The blocks that become FSDP units of their own: the decoder layers. The vision tower's blocks stay
    in the root unit (gathered once per step): the tower runs a data-dependent number of times per step
    (once per image size in the batch, not at all for a text-only batch), and a unit of its own would
    issue a different number of all-gathers on each rank, which deadlocks the collectives."""
    from k15.models.vision import Block

    return block_classes() - {Block}


def fully_shard_model(model: nn.Module, mesh, activation_checkpointing: bool = False) -> nn.Module:
    """FSDP2: every decoder layer its own unit (its parameters gathered just for its forward/backward),
    then the rest (embeddings, norms, head, a VLM's tower and projector) as the root unit. Activation
    checkpointing wraps every block, the vision blocks included, first."""
    from torch.distributed.fsdp import FSDPModule, fully_shard

    if isinstance(model, FSDPModule):
        return model  # configure_model may run again (a second fit with the same module)
    _SKELETONS[model] = meta_twin(model)
    checkpointed, units = tuple(block_classes()), tuple(shard_unit_classes())
    if activation_checkpointing:
        from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import apply_activation_checkpointing

        apply_activation_checkpointing(model, check_fn=lambda m: isinstance(m, checkpointed))
    for module in list(model.modules()):
        if isinstance(module, units):
            fully_shard(module, mesh=mesh)
    fully_shard(model, mesh=mesh)
    return model


def reshard(model: nn.Module) -> None:
    """Put FSDP2's sharded parameters back on `model`. After a no-grad forward the root unit keeps its
    unsharded ones registered; an optimizer built then would hold those and never see a gradient."""
    from torch.distributed.fsdp import FSDPModule

    for module in model.modules():
        if isinstance(module, FSDPModule):
            module.reshard()


def full_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """Every parameter and buffer whole, on every rank (a collective under FSDP: call it on all ranks)."""
    from torch.distributed.tensor import DTensor

    return {k: v.full_tensor() if isinstance(v, DTensor) else v for k, v in model.state_dict().items()}


def is_sharded(model: nn.Module) -> bool:
    from torch.distributed.tensor import DTensor

    return any(isinstance(p, DTensor) for p in model.parameters())


_SKELETONS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # sharded model -> its unsharded twin on meta


def meta_twin(model: nn.Module) -> nn.Module:
    """A copy of `model` whose parameters are on the meta device (no memory); buffers are copied."""
    memo = {id(p): nn.Parameter(torch.empty_like(p, device="meta"), requires_grad=p.requires_grad) for p in model.parameters()}
    return copy.deepcopy(model, memo)


def full_weights(model: nn.Module) -> nn.Module:
    """`model` itself when it is not sharded; else an unsharded twin holding the gathered weights,
    for the rollout engine to copy from (the twin is dropped after, so no second full copy stays).
    The twin's skeleton was taken before sharding (`fully_shard_model`); under FSDP2 this is a
    collective, so every rank calls it."""
    if not is_sharded(model):
        return model
    state = {k.replace("_checkpoint_wrapped_module.", ""): v for k, v in full_state_dict(model).items()}
    twin = copy.deepcopy(_SKELETONS[model])  # meta parameters: nothing is copied
    twin.load_state_dict(state, strict=False, assign=True)
    lm = twin if hasattr(twin, "tie_weights") else getattr(twin, "decoder", None)  # a VLM ties its decoder's
    if lm is not None and getattr(lm.config, "tie_word_embeddings", False):
        lm.tie_weights()
    return twin


def configure_fsdp2(module, model: nn.Module) -> None:
    """For a LightningModule's `configure_model`: FSDP2 on `model` under k15's fsdp2 strategy
    (Lightning's ModelParallelStrategy), nothing under any other strategy."""
    from lightning.pytorch.strategies import ModelParallelStrategy

    strategy = module.trainer.strategy
    if isinstance(strategy, ModelParallelStrategy):
        mesh = module.device_mesh["data_parallel"]
        fully_shard_model(model, mesh, getattr(strategy, "activation_checkpointing", False))
