import pytest

from k15.rewards.rule import verify


@pytest.mark.parametrize(
    "response, reward, reason",
    [
        ("<answer>8</answer>", 1.0, "ok"),
        ("<think>1:7+1=8</think><answer>8</answer>", 1.0, "ok"),
        ("<answer>7</answer>", 0.0, "wrong"),
        ("<think>1:7+1=8</think>", 0.0, "missing"),
        ("<answer>8</answer><answer>7</answer>", 0.0, "multiple"),
        ("<answer></answer>", 0.0, "empty"),
        ("<answer>8</answer>7", 0.0, "trailing"),
        ("<answer>8", 0.0, "missing"),
    ],
)
def test_verdicts(response, reward, reason):
    verdict = verify(response, "8")
    assert (verdict.reward, verdict.reason) == (reward, reason)
