"""Group baselines: mean (including self), exact tau*log Z estimate, grouping by id."""

import math

import pytest
import torch

from k15.rl.advantages import advantages, group_baseline, group_stats

F64 = torch.float64


def test_mean_baseline_includes_the_sample_itself():
    rewards = torch.tensor([1.0, 0.0, 0.0, 0.0], dtype=F64)
    ids = torch.zeros(4, dtype=torch.long)
    # Leave-one-out would give 0 for the first sample and 1/3 for the others.
    assert torch.equal(group_baseline(rewards, ids, "mean"), torch.full((4,), 0.25, dtype=F64))
    assert torch.equal(advantages(rewards, ids, "mean"), torch.tensor([0.75, -0.25, -0.25, -0.25], dtype=F64))


def test_logmeanexp_matches_direct_formula():
    gen = torch.Generator().manual_seed(0)
    rewards = torch.rand(7, generator=gen, dtype=F64) * 2 - 0.5
    ids = torch.zeros(7, dtype=torch.long)
    for tau in (0.05, 0.3, 1.0, 4.0):
        direct = tau * math.log(sum(math.exp(r / tau) for r in rewards.tolist()) / 7)
        got = group_baseline(rewards, ids, "logmeanexp", tau)
        assert torch.allclose(got, torch.full((7,), direct, dtype=F64), rtol=0, atol=1e-12)


def test_logmeanexp_limits_and_bounds():
    rewards = torch.tensor([1.0, 0.0, 0.0, 1.0, 0.0], dtype=F64)  # mean 0.4, max 1
    ids = torch.zeros(5, dtype=torch.long)
    mean, top = 0.4, 1.0

    # tau -> inf: tau*log mean exp(r/tau) = mean + var/(2 tau) + O(1/tau^2).
    big = group_baseline(rewards, ids, "logmeanexp", tau=1e4)[0].item()
    assert mean < big < mean + 1e-4

    # tau -> 0: max + tau*log(#argmax/k), i.e. within tau*log(k) below the max; no overflow of exp(1/tau).
    for tau in (1e-2, 1e-4, 1e-8):
        small = group_baseline(rewards, ids, "logmeanexp", tau=tau)[0].item()
        assert math.isfinite(small)
        assert top - tau * math.log(5) <= small <= top
        assert small == pytest.approx(top + tau * math.log(2 / 5), abs=1e-12)

    # Jensen: mean <= logmeanexp <= max for every tau.
    for tau in (0.01, 0.1, 1.0, 10.0):
        value = group_baseline(rewards, ids, "logmeanexp", tau=tau)[0].item()
        assert mean <= value <= top


@pytest.mark.parametrize("estimator", ["mean", "logmeanexp"])
def test_groups_by_id_not_position(estimator):
    gen = torch.Generator().manual_seed(1)
    # Unequal groups (sizes 3, 1, 5, 2) with sparse ids, shuffled so no group is contiguous.
    sizes = {42: 3, 7: 1, 100: 5, 3: 2}
    ids = torch.cat([torch.full((n,), gid, dtype=torch.long) for gid, n in sizes.items()])
    perm = torch.randperm(ids.numel(), generator=gen)
    ids = ids[perm]
    rewards = torch.rand(ids.numel(), generator=gen, dtype=F64)
    tau = 0.2

    got = advantages(rewards, ids, estimator, tau)
    for gid in sizes:
        sel = ids == gid
        alone = advantages(rewards[sel], torch.zeros(int(sel.sum()), dtype=torch.long), estimator, tau)
        assert torch.allclose(got[sel], alone, rtol=0, atol=1e-14)
    # A singleton group is its own baseline: zero advantage under both estimators.
    assert torch.allclose(got[ids == 7], torch.zeros(1, dtype=F64), atol=1e-14)


def test_integer_rewards_are_not_truncated():
    rewards = torch.tensor([1, 0, 0], dtype=torch.long)
    base = group_baseline(rewards, torch.zeros(3, dtype=torch.long), "mean")
    assert base.is_floating_point() and base[0].item() == pytest.approx(1 / 3)


def test_input_validation():
    r = torch.zeros(3)
    with pytest.raises(ValueError):
        group_baseline(r, torch.zeros(4, dtype=torch.long))
    with pytest.raises(TypeError):
        group_baseline(r, torch.zeros(3))
    with pytest.raises(ValueError):
        group_baseline(r, torch.zeros(3, dtype=torch.long), "logmeanexp", tau=0.0)
    with pytest.raises(ValueError):
        group_baseline(r, torch.zeros(3, dtype=torch.long), "median")  # type: ignore[arg-type]


def test_group_stats():
    # group 0: all correct, group 1: all wrong, group 2: mixed [1, 0], group 3: mixed [1, 0, 0, 0]
    ids = torch.tensor([3, 0, 2, 1, 3, 0, 1, 2, 3, 3], dtype=torch.long)
    rewards = torch.tensor([1, 1, 1, 0, 0, 1, 0, 0, 0, 0], dtype=F64)
    stats = group_stats(rewards, ids)
    assert stats["num_groups"].item() == 4
    assert stats["zero_std_frac"].item() == pytest.approx(0.5)
    assert stats["solved_all_frac"].item() == pytest.approx(0.25)
    assert stats["solved_none_frac"].item() == pytest.approx(0.25)
    assert stats["reward_mean"].item() == pytest.approx(0.4)
    assert stats["reward_std"].item() == pytest.approx(math.sqrt(0.4 * 0.6))
    # within-group population stds: 0, 0, 0.5, sqrt(0.25*0.75)
    assert stats["group_std_mean"].item() == pytest.approx((0.5 + math.sqrt(0.1875)) / 4)
    assert stats["group_size_mean"].item() == pytest.approx(2.5)
    assert all(v.dim() == 0 and not v.requires_grad for v in stats.values())
