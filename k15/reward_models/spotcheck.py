"""How well a reward model agrees with the checker on a labelled set (the paper's spot check, §2.3.5).

`agreement(labels, verdicts)` counts, against the checker's labels:
    accuracy                  share of verdicts equal to the label (an unparsed verdict counts as "correct: false")
    wrong_precision           of the responses the RM calls wrong, the share that are wrong
    wrong_recall              of the wrong responses, the share the RM calls wrong (what RL needs: a wrong
                              answer the RM lets through is a reward for a wrong answer)
    unparsed                  verdicts that could not be read (CoT RM), counted apart
Precision and recall are on the *wrong* class, as the issue asks: that is where a lenient judge hurts.
"""

from __future__ import annotations


def agreement(labels: list[bool], verdicts: list[bool | None]) -> dict[str, float | int]:
    if len(labels) != len(verdicts):
        raise ValueError(f"{len(labels)} labels but {len(verdicts)} verdicts")
    said = [bool(v) for v in verdicts]  # unparsed (None) scores as wrong, as it does as a reward
    called_wrong = [not s for s in said]
    wrong = [not label for label in labels]
    true_wrong = sum(c and w for c, w in zip(called_wrong, wrong))
    n = len(labels)
    return {
        "n": n,
        "accuracy": sum(s == label for s, label in zip(said, labels)) / n if n else 0.0,
        "wrong_precision": true_wrong / sum(called_wrong) if any(called_wrong) else 0.0,
        "wrong_recall": true_wrong / sum(wrong) if any(wrong) else 0.0,
        "unparsed": sum(v is None for v in verdicts),
    }
