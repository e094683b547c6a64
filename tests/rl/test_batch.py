import torch

from k15.data.prompts import PromptRecord
from k15.rl.batch import RolloutBatch
from k15.rollout.buffer import Group, Trajectory


def make_batch() -> RolloutBatch:
    records = [PromptRecord("p0", "1+1=", "2", 1, "arithmetic"), PromptRecord("p1", "2+2=", "4", 1, "arithmetic")]
    prompts = [[1, 10, 11], [1, 12]]

    def one_go(tokens, logprobs, reason):
        return Trajectory(tokens, logprobs, [(0, len(tokens))], reason)

    groups = [
        Group("0.0", 0, [one_go([5, 6], [-0.1, -0.2], "stop"), one_go([7], [-0.3], "length")]),
        Group("0.1", 1, [one_go([8, 9, 4], [-0.4, -0.5, -0.6], "stop"), one_go([3], [-0.7], "stop")]),
    ]
    return RolloutBatch.from_groups(groups, records, prompts, iteration=0, loss_on_current_only=False, pad_id=0)


def test_ids_groups_and_tensors():
    batch = make_batch()
    assert [s.id for s in batch.samples] == ["p0@0.0#0", "p0@0.0#1", "p1@0.1#0", "p1@0.1#1"]
    assert batch.group_ids.tolist() == [0, 0, 1, 1]
    ids, attention, loss_mask = batch.tensors()
    assert ids.tolist() == [[1, 10, 11, 5, 6], [1, 10, 11, 7, 0], [1, 12, 8, 9, 4], [1, 12, 3, 0, 0]]
    assert attention.tolist() == [[1, 1, 1, 1, 1], [1, 1, 1, 1, 0], [1, 1, 1, 1, 1], [1, 1, 1, 0, 0]]
    assert loss_mask.tolist() == [[0, 0, 0, 1, 1], [0, 0, 0, 1, 0], [0, 0, 1, 1, 1], [0, 0, 1, 0, 0]]
    stats = batch.length_stats()
    assert stats["tokens"] == 7 and stats["truncated_frac"] == 0.25


def test_logprob_mismatch_reads_response_positions():
    batch = make_batch()
    train = torch.zeros(4, 5)
    train[0, 3:5] = torch.tensor([-0.1, -0.2])
    train[1, 3] = -0.3
    train[2, 2:5] = torch.tensor([-0.4, -0.5, -0.6])
    train[3, 2] = -0.7
    assert batch.logprob_mismatch(train) < 1e-7
    train[3, 2] = -1.7
    assert abs(batch.logprob_mismatch(train) - 1.0 / 7) < 1e-6


def test_packed_token_logprobs_equal_a_padded_forward():
    import torch.nn.functional as F
    from transformers import LlamaConfig, LlamaForCausalLM

    from k15.rl.batch import token_logprobs

    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=30, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                         num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=64)).eval()
    lengths = [5, 9, 3, 12, 7, 12, 2]
    ids = torch.zeros(len(lengths), 12, dtype=torch.long)
    attention = torch.zeros_like(ids)
    for i, n in enumerate(lengths):
        ids[i, :n] = torch.randint(1, 30, (n,))
        attention[i, :n] = 1
    with torch.no_grad():
        got = token_logprobs(model, ids, attention)
        logits = model(input_ids=ids, attention_mask=attention).logits
    want = F.pad(torch.gather(F.log_softmax(logits[:, :-1], -1), 2, ids[:, 1:, None]).squeeze(-1), (1, 0)) * attention
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_from_groups_masks_older_segments_when_training_on_the_current_one_only():
    records = [PromptRecord("p0", "1+1=", "2", 1, "arithmetic")]
    # Member 0: 2 tokens from iteration 3, then 2 from iteration 4. Member 1 finished at iteration 3.
    m0 = Trajectory([5, 6, 7, 8], [-0.1, -0.2, -0.3, -0.4], [(3, 2), (4, 2)], "stop")
    m1 = Trajectory([9], [-0.5], [(3, 1)], "stop")
    groups = [Group("3.0", 0, [m0, m1]), Group("4.1", 0, [m1, m0])]  # the same prompt in flight twice
    for current_only, loss in [(False, [[0, 0, 1, 1, 1, 1], [0, 0, 1, 0, 0, 0]]), (True, [[0, 0, 0, 0, 1, 1], [0, 0, 0, 0, 0, 0]])]:
        batch = RolloutBatch.from_groups(groups, records, [[1, 10]] * 2, iteration=4, loss_on_current_only=current_only, pad_id=0)
        assert [s.id for s in batch.samples] == ["p0@3.0#0", "p0@3.0#1", "p0@4.1#0", "p0@4.1#1"]
        assert batch.group_ids.tolist() == [0, 0, 1, 1]
        _, _, loss_mask = batch.tensors()
        assert loss_mask[:2].tolist() == loss
    # The rollout/train mismatch reads only this iteration's tokens (older ones had older policies).
    train = torch.zeros(4, 6)
    train[0, 4:6] = torch.tensor([-0.3, -0.4])
    train[3, 4:6] = torch.tensor([-0.3, -0.4])
    assert batch.logprob_mismatch(train) < 1e-7
    assert [s.segments for s in batch.samples] == [2, 1, 1, 2]
