from k15.rl.sampler import UniformSampler


def test_each_pass_covers_every_prompt_once():
    sampler = UniformSampler(10, seed=0)
    first, second = sampler.draw(10), sampler.draw(10)
    assert sorted(first) == sorted(second) == list(range(10)) and first != second


def test_state_round_trip_continues_identically():
    a = UniformSampler(17, seed=3)
    a.draw(5)
    state = a.state_dict()
    b = UniformSampler(17, seed=99)
    b.load_state_dict(state)
    assert [a.draw(7) for _ in range(5)] == [b.draw(7) for _ in range(5)]
