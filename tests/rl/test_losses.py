"""RL losses: exact agreement with the paper's eq. 3, and a behavioural check of the sign."""

import math

import pytest
import torch
from torch import Tensor

from k15.rl.advantages import advantages
from k15.rl.losses import k15_loss, reinforce_loss, rest_loss, rl_loss, sequence_logprob

F64 = torch.float64


@pytest.fixture(autouse=True)
def _one_thread():
    # These tensors are tiny: extra intra-op threads only spin, and under a loaded CPU they made the
    # behavioural loop ~7x slower. Restore the setting so other test modules are unaffected.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# ---------------------------------------------------------------------------------------------
# A small differentiable policy: logits = features @ W, so every logp_j is a real function of W.
# ---------------------------------------------------------------------------------------------


def _linear_policy_batch(n: int, t: int = 6, h: int = 5, v: int = 7, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    feats = torch.randn(n, t, h, generator=gen, dtype=F64)
    tokens = torch.randint(0, v, (n, t), generator=gen)
    lengths = torch.randint(2, t + 1, (n,), generator=gen)
    mask = (torch.arange(t)[None, :] < lengths[:, None]).to(F64)
    w_ref = torch.randn(h, v, generator=gen, dtype=F64)
    delta = 0.3 * torch.randn(h, v, generator=gen, dtype=F64)
    return feats, tokens, mask, w_ref, delta


def _seq_logp(w: Tensor, feats: Tensor, tokens: Tensor, mask: Tensor) -> Tensor:
    token_lp = torch.log_softmax(feats @ w, dim=-1).gather(-1, tokens[..., None]).squeeze(-1)
    return sequence_logprob(token_lp, mask, "sum")


def _eq3_direction(w, feats, tokens, mask, logp_ref, rewards, ids, tau) -> Tensor:
    """The paper's eq. 3, built by hand from per-sample gradients, averaged over the prompts:
    g_x = (1/k) sum_j [ grad logp_j (r_j - r_bar) - (tau/2) grad (logp_j - logp_ref_j)^2 ]."""
    logp = _seq_logp(w, feats, tokens, mask)
    per_prompt = []
    for gid in ids.unique().tolist():
        members = (ids == gid).nonzero().flatten().tolist()
        r_bar = sum(rewards[j].item() for j in members) / len(members)
        g = torch.zeros_like(w)
        for j in members:
            (grad_j,) = torch.autograd.grad(logp[j], w, retain_graph=True)
            log_ratio = (logp[j] - logp_ref[j]).item()
            grad_sq = 2.0 * log_ratio * grad_j  # grad of (logp_j - logp_ref_j)^2, logp_ref constant
            g += grad_j * (rewards[j].item() - r_bar) - (tau / 2) * grad_sq
        per_prompt.append(g / len(members))
    return torch.stack(per_prompt).mean(0)


@pytest.mark.parametrize("tau", [0.05, 0.5, 2.0])
def test_k15_gradient_equals_minus_eq3_off_reference(tau):
    k = 6
    feats, tokens, mask, w_ref, delta = _linear_policy_batch(k, seed=3)
    rewards = torch.tensor([1.0, 0.0, 0.0, 1.0, 0.0, 0.0], dtype=F64)
    ids = torch.zeros(k, dtype=torch.long)
    logp_ref = _seq_logp(w_ref, feats, tokens, mask).detach()
    w = (w_ref + delta).requires_grad_(True)  # theta != theta_ref: the squared term is active

    loss, _ = k15_loss(_seq_logp(w, feats, tokens, mask), logp_ref, advantages(rewards, ids, "mean"), tau)
    (grad_loss,) = torch.autograd.grad(loss, w)
    g = _eq3_direction(w, feats, tokens, mask, logp_ref, rewards, ids, tau)
    torch.testing.assert_close(grad_loss, -g, rtol=1e-10, atol=1e-12)

    # The test must actually exercise the squared term: its share of g is not negligible.
    loss_pg, _ = reinforce_loss(_seq_logp(w, feats, tokens, mask), advantages(rewards, ids, "mean"))
    (grad_pg,) = torch.autograd.grad(loss_pg, w)
    assert (grad_loss - grad_pg).norm() > 0.05 * grad_pg.norm()


def test_k15_gradient_multi_prompt_interleaved_groups():
    # Two prompts of k=5 each, interleaved in the batch: the batch-mean loss is -(1/P) sum_x g_x.
    feats, tokens, mask, w_ref, delta = _linear_policy_batch(10, seed=4)
    ids = torch.tensor([9, 2, 2, 9, 9, 2, 9, 2, 2, 9])
    rewards = torch.tensor([1, 0, 1, 0, 0, 1, 1, 0, 0, 0], dtype=F64)
    tau = 0.3
    logp_ref = _seq_logp(w_ref, feats, tokens, mask).detach()
    w = (w_ref + delta).requires_grad_(True)

    loss, _ = k15_loss(_seq_logp(w, feats, tokens, mask), logp_ref, advantages(rewards, ids, "mean"), tau)
    (grad_loss,) = torch.autograd.grad(loss, w)
    g = _eq3_direction(w, feats, tokens, mask, logp_ref, rewards, ids, tau)
    torch.testing.assert_close(grad_loss, -g, rtol=1e-10, atol=1e-12)


def test_at_reference_squared_term_has_no_gradient():
    k = 6
    feats, tokens, mask, w_ref, _ = _linear_policy_batch(k, seed=5)
    rewards = torch.tensor([0.0, 1.0, 1.0, 0.0, 0.0, 0.0], dtype=F64)
    ids = torch.zeros(k, dtype=torch.long)
    w = w_ref.clone().requires_grad_(True)
    logp = _seq_logp(w, feats, tokens, mask)
    adv = advantages(rewards, ids, "mean")

    loss, stats = k15_loss(logp, logp.detach(), adv, tau=1.0)
    (grad_k15,) = torch.autograd.grad(loss, w, retain_graph=True)
    (grad_rf,) = torch.autograd.grad(reinforce_loss(logp, adv)[0], w)
    assert torch.equal(grad_k15, grad_rf)
    assert stats["sq_term"].item() == 0.0

    # ... and that is REINFORCE with the (self-inclusive) mean baseline, built by hand.
    r_bar = rewards.mean().item()
    by_hand = torch.zeros_like(w)
    for j in range(k):
        (grad_j,) = torch.autograd.grad(_seq_logp(w, feats, tokens, mask)[j], w)
        by_hand -= grad_j * (rewards[j].item() - r_bar) / k
    torch.testing.assert_close(grad_k15, by_hand, rtol=1e-10, atol=1e-12)


def test_adv_and_reference_are_constants():
    logp = torch.randn(4, dtype=F64, requires_grad=True)
    logp_ref = torch.randn(4, dtype=F64, requires_grad=True)
    adv = torch.randn(4, dtype=F64, requires_grad=True)
    loss, stats = k15_loss(logp, logp_ref, adv, tau=0.5)
    grads = torch.autograd.grad(loss, [logp, logp_ref, adv], allow_unused=True)
    assert grads[1] is None and grads[2] is None
    # d loss / d logp_j = (-adv_j + tau * (logp_j - ref_j)) / N
    torch.testing.assert_close(grads[0], (-adv + 0.5 * (logp - logp_ref)).detach() / 4)
    assert all(v.dim() == 0 and not v.requires_grad for v in stats.values())
    torch.testing.assert_close(stats["sq_term"], 0.5 * ((logp - logp_ref) ** 2).mean().detach())
    torch.testing.assert_close(stats["pg_loss"] + 0.5 * stats["sq_term"], loss.detach())


# ---------------------------------------------------------------------------------------------
# Behaviour: a tiny autoregressive policy over two tokens must learn to emit the rewarded pair.
# ---------------------------------------------------------------------------------------------

PROMPTS, VOCAB, K = 6, 4, 8


def _expected_reward(first: Tensor, second: Tensor, targets: Tensor) -> float:
    """Exact E[r] = mean_p pi(a_p | p) * pi(b_p | p, a_p) for the target pair (a_p, b_p)."""
    p = torch.arange(PROMPTS)
    p1 = torch.softmax(first, -1)[p, targets[:, 0]]
    p2 = torch.softmax(second, -1)[p, targets[:, 0], targets[:, 1]]
    return (p1 * p2).mean().item()


def _train(loss_name: str, flip: bool = False, iters: int = 25, steps: int = 4, tau: float = 0.1):
    """Run the RL loop on the two-token policy; return (expected reward before, after)."""
    gen = torch.Generator().manual_seed(1234)
    targets = torch.randint(0, VOCAB, (PROMPTS, 2), generator=gen)
    first = torch.zeros(PROMPTS, VOCAB, dtype=F64, requires_grad=True)  # pi(t1 | p)
    second = torch.zeros(PROMPTS, VOCAB, VOCAB, dtype=F64, requires_grad=True)  # pi(t2 | p, t1)
    start = _expected_reward(first.detach(), second.detach(), targets)  # 1/16

    prompt_ids = torch.arange(PROMPTS).repeat_interleave(K)
    mask = torch.ones(PROMPTS * K, 2, dtype=F64)

    def token_logprobs(t1: Tensor, t2: Tensor) -> Tensor:
        lp1 = torch.log_softmax(first, -1)[prompt_ids, t1]
        lp2 = torch.log_softmax(second, -1)[prompt_ids, t1, t2]
        return torch.stack([lp1, lp2], dim=-1)

    for _ in range(iters):
        with torch.no_grad():
            t1 = torch.multinomial(torch.softmax(first, -1)[prompt_ids], 1, generator=gen).squeeze(-1)
            t2 = torch.multinomial(torch.softmax(second, -1)[prompt_ids, t1], 1, generator=gen).squeeze(-1)
            rewards = ((t1 == targets[prompt_ids, 0]) & (t2 == targets[prompt_ids, 1])).to(F64)
            logp_ref = sequence_logprob(token_logprobs(t1, t2), mask, "sum")  # reference = policy now
        adv = advantages(rewards, prompt_ids, "mean")
        if flip:
            adv, rewards = -adv, 1.0 - rewards
        # The paper resets the optimizer every iteration (each iteration is a new problem).
        opt = torch.optim.Adam([first, second], lr=0.1)
        for _ in range(steps):
            logp = sequence_logprob(token_logprobs(t1, t2), mask, "sum")
            loss, _ = rl_loss(loss_name, logp, logp_ref=logp_ref, adv=adv, rewards=rewards, tau=tau)
            opt.zero_grad()
            loss.backward()
            opt.step()
    return start, _expected_reward(first.detach(), second.detach(), targets)


@pytest.mark.parametrize("loss_name", ["k15", "reinforce", "rest"])
def test_policy_learns_the_rewarded_sequence(loss_name):
    start, end = _train(loss_name)
    assert start == pytest.approx(1 / 16)
    # From 6% to over half the mass on the one rewarded pair of 16; a wrong sign goes to ~0,
    # a loss that ignores the reward stays near 1/16.
    assert end > 0.5, (loss_name, start, end)


@pytest.mark.parametrize("loss_name", ["k15", "reinforce", "rest"])
def test_flipped_signal_unlearns(loss_name):
    # Negative control: advantages negated (rest: only the wrong samples are fitted).
    start, end = _train(loss_name, flip=True)
    assert end < 0.5 * start, (loss_name, start, end)


# ---------------------------------------------------------------------------------------------
# sequence_logprob, rest_loss edge cases, registry.
# ---------------------------------------------------------------------------------------------


def test_sequence_logprob_normalizations():
    lp = torch.tensor([[-1.0, -2.0, -3.0], [-0.5, float("-inf"), float("nan")], [-4.0, -4.0, -4.0]], dtype=F64)
    mask = torch.tensor([[1, 1, 1], [1, 0, 0], [0, 0, 0]])
    lp.requires_grad_(True)

    s = sequence_logprob(lp, mask, "sum")
    torch.testing.assert_close(s, torch.tensor([-6.0, -0.5, 0.0], dtype=F64))
    torch.testing.assert_close(sequence_logprob(lp, mask, "mean"), torch.tensor([-2.0, -0.5, 0.0], dtype=F64))
    torch.testing.assert_close(
        sequence_logprob(lp, mask.bool(), "constant", constant=4.0), torch.tensor([-1.5, -0.125, 0.0], dtype=F64)
    )
    # Padding (even -inf/nan) gets exactly zero gradient and does not poison the others.
    (grad,) = torch.autograd.grad(s.sum(), lp)
    torch.testing.assert_close(grad, mask.to(F64))

    with pytest.raises(ValueError):
        sequence_logprob(lp, mask, "constant")
    with pytest.raises(ValueError):
        sequence_logprob(lp, mask, "constant", constant=0.0)
    with pytest.raises(ValueError):
        sequence_logprob(lp, mask, "sum", constant=3.0)
    with pytest.raises(ValueError):
        sequence_logprob(lp, mask[:, :2], "sum")


def test_rest_loss_fits_only_positive_samples():
    logp = torch.tensor([-1.0, -2.0, -3.0, -4.0], dtype=F64, requires_grad=True)
    rewards = torch.tensor([1.0, 0.0, 1.0, 0.0], dtype=F64)
    loss, stats = rest_loss(logp, rewards)
    assert loss.item() == pytest.approx(2.0)  # -mean(-1, -3)
    loss.backward()
    torch.testing.assert_close(logp.grad, torch.tensor([-0.5, 0.0, -0.5, 0.0], dtype=F64))
    assert stats["pos_frac"].item() == 0.5

    # Threshold is an argument: with 0.0 a reward of 0.3 counts as correct, with the default it does not.
    r = torch.tensor([0.3, 0.0], dtype=F64)
    assert rest_loss(logp[:2].detach(), r, threshold=0.0)[0].item() == pytest.approx(1.0)
    assert rest_loss(logp[:2].detach(), r)[0].item() == 0.0


def test_rest_loss_without_positive_sample_backpropagates_zero():
    logp = torch.tensor([-1.0, float("-inf"), -3.0], dtype=F64, requires_grad=True)
    loss, stats = rest_loss(logp, torch.zeros(3, dtype=F64))
    assert loss.item() == 0.0 and loss.grad_fn is not None
    loss.backward()
    assert logp.grad is not None and torch.equal(logp.grad, torch.zeros(3, dtype=F64))
    assert stats["num_pos"].item() == 0


def test_rl_loss_dispatch():
    logp = torch.randn(4, dtype=F64)
    ref, adv, rewards = torch.randn(4, dtype=F64), torch.randn(4, dtype=F64), torch.tensor([1.0, 0, 0, 1], dtype=F64)
    assert torch.equal(rl_loss("k15", logp, logp_ref=ref, adv=adv, tau=0.2)[0], k15_loss(logp, ref, adv, 0.2)[0])
    assert torch.equal(rl_loss("reinforce", logp, adv=adv)[0], reinforce_loss(logp, adv)[0])
    assert torch.equal(rl_loss("rest", logp, rewards=rewards)[0], rest_loss(logp, rewards)[0])
    with pytest.raises(ValueError, match="tau"):
        rl_loss("k15", logp, logp_ref=ref, adv=adv)
    with pytest.raises(ValueError):
        rl_loss("ppo", logp, adv=adv)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        k15_loss(logp, ref[:3], adv, 0.2)
    assert math.isfinite(reinforce_loss(logp, adv)[0].item())
