"""RLModule's wiring of the k1.5 iteration: which reference the squared term sees, and when Adam starts afresh.

The loss functions are tested alone in test_losses.py; these tests drive a real RLModule (a tiny random
decoder, real rollouts, real optimizer steps) through several iterations and watch what reaches the
loss and the optimizer. Each guards a mistake that would train without any error:

- the reference recomputed at every minibatch step: the squared term is then always 0 (plain REINFORCE);
- the reference taken from the run's start (the SFT model) instead of the policy at the iteration start;
- no fresh optimizer each iteration in the paper's arm (`rl.reset_optimizer=true`);
- a reset anyway in the persistent arm (`rl.reset_optimizer=false`, F11), or its Adam state lost on resume.

Rewards are faked (half of every group correct) so that every group has a non-zero advantage and the
policy moves at each step.
"""

from __future__ import annotations

import copy
import io
from dataclasses import dataclass, field

import pytest
import torch
from torch.optim.optimizer import register_optimizer_step_post_hook, register_optimizer_step_pre_hook

import k15.modules.rl as rl_module
from k15.config import ModelConfig, RLConfig
from k15.data.prompts import PromptRecord
from k15.models.decoder import build_decoder
from k15.modules.rl import RLModule
from k15.rl.batch import token_logprobs
from k15.rl.losses import sequence_logprob
from k15.tokenizer import build_synthetic_tokenizer

pytestmark = pytest.mark.usefixtures("one_thread")

SQ_ZERO = 1e-10  # a squared term this small is "no distance from the reference" (float32 round-off)


def make_module(**overrides) -> RLModule:
    tok = build_synthetic_tokenizer()
    torch.manual_seed(0)
    model = build_decoder(ModelConfig(hidden_size=32, num_layers=1, num_heads=2, num_kv_heads=2, intermediate_size=64,
                                      max_seq_len=64), tok).train()
    prompts = [PromptRecord(f"p{i}", f"{i}+1=", str(i + 1), 1, "arithmetic") for i in range(6)]
    settings = dict(prompts_per_iteration=2, samples_per_prompt=4, max_new_tokens=6, epochs=2, minibatches=1, lr=1e-2,
                    sample_every_n_iterations=0)
    cfg = RLConfig(**{**settings, **overrides})
    module = RLModule(model, tok, prompts, cfg, max_seq_len=64, seed=0)
    module.manual_backward = lambda loss: loss.backward()  # no trainer attached

    def half_correct(rollout):
        correct = torch.arange(len(rollout.samples)) % 2 == 0
        return correct.float(), correct

    module.score = half_correct
    return module


@dataclass
class Call:
    """One rl_loss call: the rows of its minibatch, what it was given and what it returned."""

    iteration: int
    rows: torch.Tensor
    logp: torch.Tensor
    logp_ref: torch.Tensor
    parts: dict


@dataclass
class Step:
    """One optimizer step: the Adam state of the first parameter before it (and after it)."""

    iteration: int
    count_before: int  # Adam's step count; 0 for a fresh optimizer
    exp_avg_before: torch.Tensor | None
    exp_avg_after: torch.Tensor | None = None


@dataclass
class Record:
    calls: list[Call] = field(default_factory=list)
    steps: list[Step] = field(default_factory=list)
    start_weights: list[dict] = field(default_factory=list)  # state_dict at the start of each iteration
    rollouts: list = field(default_factory=list)  # the RolloutBatch each iteration trained on
    metrics: list[dict] = field(default_factory=list)


def first_param_state(opt: torch.optim.Optimizer) -> tuple[int, torch.Tensor | None]:
    param = opt.param_groups[0]["params"][0]
    state = opt.state.get(param, {})
    step = state.get("step")
    exp_avg = state.get("exp_avg")
    return (0 if step is None else int(step)), (None if exp_avg is None else exp_avg.detach().clone())


@pytest.fixture
def watch(monkeypatch):
    """Records every rl_loss call (with its rows) and every optimizer step while `drive` runs iterations."""
    record = Record()
    current: dict = {"module": None, "rows": None}

    real_owned_rows = rl_module.owned_rows

    def owned_rows(rows, *args, **kwargs):  # on one process: the minibatch itself, just before its rl_loss
        current["rows"] = real_owned_rows(rows, *args, **kwargs).clone()
        return current["rows"]

    real_rl_loss = rl_module.rl_loss

    def rl_loss(name, logp, **kwargs):
        loss, parts = real_rl_loss(name, logp, **kwargs)
        record.calls.append(Call(current["module"].iteration, current["rows"], logp.detach().clone(),
                                 kwargs["logp_ref"].detach().clone(), {k: float(v) for k, v in parts.items()}))
        return loss, parts

    monkeypatch.setattr(rl_module, "owned_rows", owned_rows)
    monkeypatch.setattr(rl_module, "rl_loss", rl_loss)

    def before_step(opt, args, kwargs):
        count, exp_avg = first_param_state(opt)
        record.steps.append(Step(current["module"].iteration, count, exp_avg))

    def after_step(opt, args, kwargs):
        record.steps[-1].exp_avg_after = first_param_state(opt)[1]

    handles = [register_optimizer_step_pre_hook(before_step), register_optimizer_step_post_hook(after_step)]

    def drive(module: RLModule, iterations: int) -> Record:
        current["module"] = module
        if "train_on" not in vars(module):  # wrapped once per module
            module.log_iteration = lambda metrics, rollout, rewards: record.metrics.append(dict(metrics))
            real_train_on = module.train_on

            def train_on(rollout, rewards, adv):
                record.rollouts.append(rollout)
                return real_train_on(rollout, rewards, adv)

            module.train_on = train_on
        for _ in range(iterations):
            record.start_weights.append(copy.deepcopy(module.model.state_dict()))
            module.training_step(None, module.iteration)
        return record

    yield drive
    for handle in handles:
        handle.remove()


def reference_logp(module: RLModule, weights: dict, rollout) -> torch.Tensor:
    """Sequence log-probs [N] of the rollout under `weights`: the reference computed by hand."""
    model = copy.deepcopy(module.model)
    model.load_state_dict(weights)
    ids, attention, loss_mask = rollout.tensors()
    with torch.no_grad():
        return sequence_logprob(token_logprobs(model, ids, attention), loss_mask, module.cfg.logp_normalization)


SHAPES = [pytest.param(2, 1, id="2 epochs x 1 minibatch"), pytest.param(2, 2, id="2 epochs x 2 minibatches"),
          pytest.param(1, 3, id="1 epoch x 3 minibatches")]


@pytest.mark.parametrize("epochs, minibatches", SHAPES)
def test_squared_term_is_the_distance_from_the_iteration_start_policy_at_every_step(watch, epochs, minibatches):
    module = make_module(epochs=epochs, minibatches=minibatches)
    module.on_fit_start()
    record = watch(module, 3)
    steps = epochs * minibatches
    assert len(record.calls) == 3 * steps and len(record.steps) == 3 * steps  # every step taken, none skipped
    for it in range(3):
        ref = reference_logp(module, record.start_weights[it], record.rollouts[it])
        calls = [c for c in record.calls if c.iteration == it]
        for k, call in enumerate(calls):
            torch.testing.assert_close(call.logp_ref, ref[call.rows], atol=1e-5, rtol=0)
            by_hand = 0.5 * float(((call.logp - ref[call.rows]) ** 2).mean())
            assert call.parts["sq_term"] == pytest.approx(by_hand, rel=1e-4, abs=1e-9)
            if k == 0:  # no step taken yet: the policy is the reference, the first step is plain REINFORCE
                assert call.parts["sq_term"] < SQ_ZERO
            else:  # after a step the policy has moved away from the reference, and the penalty sees it
                assert call.parts["sq_term"] > 1e-6, f"iteration {it} step {k}: squared term {call.parts['sq_term']}"
        # the logged distance is the last step's squared term
        assert record.metrics[it]["rl/kl"] == pytest.approx(calls[-1].parts["sq_term"])


def test_later_iterations_take_the_reference_from_their_own_start_not_the_run_start(watch):
    module = make_module(epochs=2, minibatches=2)
    module.on_fit_start()
    record = watch(module, 3)
    for it in (1, 2):
        rollout = record.rollouts[it]
        at_start = reference_logp(module, record.start_weights[it], rollout)
        at_run_start = reference_logp(module, record.start_weights[0], rollout)
        # the two candidates differ by far more than the tolerance of the comparison below
        assert float((at_start - at_run_start).abs().max()) > 1e-2
        calls = [c for c in record.calls if c.iteration == it]
        seen = torch.full_like(at_start, float("nan"))
        for call in calls[:2]:  # the first epoch's two minibatches cover every row once
            seen[call.rows] = call.logp_ref
        torch.testing.assert_close(seen, at_start, atol=1e-5, rtol=0)
        # the reference pass is also what the rollout engine (synced at the iteration start) sampled from
        assert record.metrics[it]["rl/logp_mismatch"] < 1e-4


@pytest.mark.parametrize("epochs, minibatches", [(2, 1), (1, 2)])
def test_reset_arm_starts_every_iteration_with_a_fresh_adam(watch, epochs, minibatches):
    module = make_module(epochs=epochs, minibatches=minibatches, reset_optimizer=True)
    module.on_fit_start()
    record = watch(module, 3)
    steps = epochs * minibatches
    for it in range(3):
        mine = [s for s in record.steps if s.iteration == it]
        assert [s.count_before for s in mine] == list(range(steps)), f"iteration {it}"
        assert mine[0].exp_avg_before is None  # no moments carried in from the previous iteration
    # and the optimizer is not checkpointed: there is nothing of it to carry
    checkpoint: dict = {}
    module.on_save_checkpoint(checkpoint)
    assert checkpoint["k15_rl"]["optimizer"] is None


def test_persistent_arm_carries_adam_state_across_iterations(watch):
    module = make_module(epochs=2, minibatches=1, reset_optimizer=False)
    module.on_fit_start()
    record = watch(module, 3)
    assert [s.count_before for s in record.steps] == list(range(6))  # one count over the whole run
    for it in (1, 2):
        first = next(s for s in record.steps if s.iteration == it)
        last_before = [s for s in record.steps if s.iteration == it - 1][-1]
        torch.testing.assert_close(first.exp_avg_before, last_before.exp_avg_after, atol=0, rtol=0)


def on_disk(module: RLModule) -> dict:
    """The module's checkpoint written and read back, as the trainer does: a copy, not the live tensors."""
    checkpoint: dict = {}
    module.on_save_checkpoint(checkpoint)
    buffer = io.BytesIO()
    torch.save(checkpoint, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=False)


def test_persistent_adam_state_survives_checkpoint_and_resume(watch):
    whole = make_module(epochs=2, minibatches=1, reset_optimizer=False)
    whole.on_fit_start()
    watch(whole, 1)
    checkpoint = on_disk(whole)
    saved = checkpoint["k15_rl"]["optimizer"]
    assert saved is not None and all(int(s["step"]) == 2 for s in saved["state"].values())
    weights = copy.deepcopy(whole.model.state_dict())
    record = watch(whole, 1)  # the uninterrupted run's second iteration
    uninterrupted = record.steps[-2:]

    resumed = make_module(epochs=2, minibatches=1, reset_optimizer=False)
    resumed.model.load_state_dict(weights)
    resumed.on_load_checkpoint(checkpoint)  # as Lightning does on resume: restore, then fit start
    resumed.on_fit_start()
    record = watch(resumed, 1)
    again = record.steps[-2:]
    assert [s.count_before for s in again] == [2, 3] == [s.count_before for s in uninterrupted]
    for a, b in zip(again, uninterrupted):
        torch.testing.assert_close(a.exp_avg_before, b.exp_avg_before, atol=0, rtol=0)
    for name, value in whole.model.state_dict().items():
        torch.testing.assert_close(resumed.model.state_dict()[name], value, atol=0, rtol=0, msg=name)


def test_advantage_size_is_logged_once_over_the_whole_iteration(watch):
    module = make_module(epochs=1, minibatches=2)
    module.on_fit_start()
    metrics = watch(module, 1).metrics[0]
    # half of every group of 4 correct: advantages +-0.5 on all 8 samples, whichever rows the last minibatch held
    assert metrics["rl/adv_abs_mean"] == pytest.approx(0.5)
    assert not [key for key in metrics if "absmean" in key]  # one name for it, not two
