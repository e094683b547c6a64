import math

import pytest
import torch

from k15.config import ModelConfig
from k15.errors import CheckpointError
from k15.long2short.dpo import dpo_loss
from k15.long2short.merge import merge_checkpoints, merge_state_dicts
from k15.long2short.pairs import Candidate, dpo_pairs, shortest_correct
from k15.models.decoder import build_decoder, export, load_decoder
from k15.tokenizer import build_synthetic_tokenizer

SMALL = ModelConfig(hidden_size=16, num_layers=1, num_heads=2, num_kv_heads=2, intermediate_size=32, max_seq_len=32)


def test_merge_arithmetic_and_checkpoint_round_trip(tmp_path):
    tok = build_synthetic_tokenizer()
    torch.manual_seed(0)
    a, b = build_decoder(SMALL, tok), build_decoder(SMALL, tok)
    export(a, tok, tmp_path / "a")
    export(b, tok, tmp_path / "b")
    merge_checkpoints(tmp_path / "a", tmp_path / "b", tmp_path / "m", weight=0.25)
    merged = load_decoder(tmp_path / "m").state_dict()
    for name, ta in a.state_dict().items():
        torch.testing.assert_close(merged[name], 0.25 * ta + 0.75 * b.state_dict()[name])
    with pytest.raises(CheckpointError, match="not empty"):
        merge_checkpoints(tmp_path / "a", tmp_path / "b", tmp_path / "m")


def test_merge_refuses_mismatches_naming_the_first_differing_tensor():
    a = {"x": torch.zeros(2, 3), "y": torch.zeros(4)}
    with pytest.raises(CheckpointError, match=r"'x' has shape \(2, 3\) vs \(3, 2\)"):
        merge_state_dicts(a, {"x": torch.zeros(3, 2), "y": torch.zeros(4)})
    with pytest.raises(CheckpointError, match="'y' is only in the first"):
        merge_state_dicts(a, {"x": torch.zeros(2, 3)})
    tok = build_synthetic_tokenizer()
    wider = ModelConfig(hidden_size=32, num_layers=1, num_heads=2, num_kv_heads=2, intermediate_size=32, max_seq_len=32)
    with pytest.raises(CheckpointError, match="model.embed_tokens.weight"):
        merge_state_dicts(build_decoder(SMALL, tok).state_dict(), build_decoder(wider, tok).state_dict())


def test_pairs_follow_the_paper_rules():
    c = lambda n, ok: Candidate(tuple(range(n)), ok)
    candidates = [c(10, True), c(6, True), c(8, True), c(9, True), c(4, False), c(30, False), c(6, True)]
    assert shortest_correct(candidates).length == 6
    pairs = dpo_pairs([1, 2], candidates, long_ratio=1.5)
    assert all(p.chosen == tuple(range(6)) for p in pairs)
    kinds = sorted((p.kind, len(p.rejected)) for p in pairs)
    # wrong answers of any length; correct ones only at >= 1.5 x 6 = 9 tokens (9 and 10, not 8 or 6)
    assert kinds == [("long", 9), ("long", 10), ("wrong", 4), ("wrong", 30)]
    assert dpo_pairs([1], [c(5, False), c(7, False)]) == []  # no correct answer: no chosen, no pair
    assert len(dpo_pairs([1], candidates, max_pairs=2)) == 2


def test_dpo_loss_equals_a_hand_computation():
    lc, lr = torch.tensor([-3.0, -10.0]), torch.tensor([-5.0, -9.0])
    rc, rr = torch.tensor([-4.0, -9.5]), torch.tensor([-4.5, -9.0])
    beta = 0.1
    loss, stats = dpo_loss(lc, lr, rc, rr, beta)
    margins = [beta * ((-3 + 4) - (-5 + 4.5)), beta * ((-10 + 9.5) - (-9 + 9))]
    expected = sum(math.log(1 + math.exp(-m)) for m in margins) / 2
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    assert stats["reward_accuracy"].item() == 0.5


def test_dpo_nll_term_adds_the_chosen_per_token_nll():
    lc, lr = torch.tensor([-3.0, -10.0], requires_grad=True), torch.tensor([-5.0, -9.0])
    rc, rr = torch.tensor([-4.0, -9.5]), torch.tensor([-4.5, -9.0])
    plain, _ = dpo_loss(lc, lr, rc, rr, 0.1)
    loss, stats = dpo_loss(lc, lr, rc, rr, 0.1, nll_weight=0.5, chosen_tokens=torch.tensor([3.0, 5.0]))
    assert stats["chosen_nll"].item() == pytest.approx((3 / 3 + 10 / 5) / 2)
    assert loss.item() == pytest.approx(plain.item() + 0.5 * 1.5, rel=1e-6)
    plain_grad = torch.autograd.grad(plain, lc)[0]
    (grad,) = torch.autograd.grad(loss, lc)
    # d/d logp_c of 0.5 * mean(-logp_c / n) = -0.5 / (2 n)
    torch.testing.assert_close(grad - plain_grad, torch.tensor([-0.5 / 6, -0.5 / 10]))


def test_dpo_gradient_pushes_chosen_up_and_rejected_down():
    lc, lr = torch.tensor([-3.0], requires_grad=True), torch.tensor([-3.0], requires_grad=True)
    loss, _ = dpo_loss(lc, lr, torch.tensor([-3.0]), torch.tensor([-3.0]), beta=0.5)
    loss.backward()
    assert lc.grad.item() < 0 < lr.grad.item()


def test_dpo_module_step_raises_chosen_margin(tmp_path):
    """A few DPO steps on fixed pairs raise the policy's preference for the chosen responses."""
    from torch.utils.data import DataLoader

    import lightning as L

    from k15.config import OptimConfig
    from k15.long2short.pairs import Pair
    from k15.modules.dpo import DPOModule, PairDataset, collate_pairs, reference_logprobs, sequence_logprobs

    torch.manual_seed(0)
    tok = build_synthetic_tokenizer()
    model = build_decoder(SMALL, tok)
    pairs = [Pair((1, 10 + i % 5), (20, 21, 22), (23, 24, 25, 26, 27), "long") for i in range(16)]
    ref = reference_logprobs(model, pairs, pad_id=0)
    c0, r0 = sequence_logprobs(model.eval(), pairs, 0)
    torch.testing.assert_close(torch.stack([c0, r0], 1).detach(), ref)
    module = DPOModule(model.train(), pad_id=0, beta=0.5, optim=OptimConfig(lr=3e-3, warmup_steps=0), max_steps=15)
    trainer = L.Trainer(max_steps=15, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, accelerator="cpu", default_root_dir=tmp_path)
    trainer.fit(module, DataLoader(PairDataset(pairs, ref), batch_size=8, collate_fn=collate_pairs))
    with torch.no_grad():
        c1, r1 = sequence_logprobs(model.eval(), pairs, 0)
    assert ((c1 - ref[:, 0]) - (r1 - ref[:, 1])).mean() > 1.0
