"""Decision rules on hand-made probability arrays with known answers."""

from __future__ import annotations

import numpy as np
import pytest

from learner.rules import Decision, decide, entropy, margin, max_probability

PROBA = np.array(
    [
        [0.90, 0.05, 0.05],  # confident
        [0.60, 0.30, 0.10],  # middling
        [0.40, 0.35, 0.25],  # unsure
        [1 / 3, 1 / 3, 1 / 3],  # no idea
    ]
)


def test_scores():
    np.testing.assert_allclose(max_probability(PROBA), [0.9, 0.6, 0.4, 1 / 3])
    np.testing.assert_allclose(margin(PROBA), [0.85, 0.30, 0.05, 0.0], atol=1e-12)
    np.testing.assert_allclose(entropy(PROBA)[3], np.log(3))
    assert entropy(np.array([[1.0, 0.0]]))[0] == 0.0  # 0 log 0 is 0, not NaN


def test_argmax_accepts_everything():
    decisions = decide(PROBA, "argmax")
    assert [d.decision for d in decisions] == ["accept"] * 4
    assert all(d.rule == "argmax" for d in decisions)


@pytest.mark.parametrize(
    "threshold, expected",
    [(0.5, ["accept", "accept", "review", "review"]), (0.8, ["accept", "review", "review", "review"])],
)
def test_threshold_rule_as_in_the_study(threshold, expected):
    decisions = decide(PROBA, "threshold", threshold=threshold)
    assert [d.decision for d in decisions] == expected
    assert decisions[1].reason == f"max probability 0.60 {'>=' if threshold == 0.5 else '<'} threshold {threshold:.2f}"


def test_threshold_is_inclusive():
    assert decide(np.array([[0.8, 0.2]]), "threshold", threshold=0.8)[0].decision == "accept"


def test_margin_rule():
    decisions = decide(PROBA, "margin", min_margin=0.25)
    assert [d.decision for d in decisions] == ["accept", "accept", "review", "review"]
    assert decisions[2] == Decision("review", "margin", "margin top1-top2 0.05 < minimum 0.25")


def test_entropy_rule():
    decisions = decide(PROBA, "entropy", max_entropy=0.5)
    assert [d.decision for d in decisions] == ["accept", "review", "review", "review"]
    assert "nats" in decisions[0].reason


def test_single_class_model_has_full_margin():
    assert decide(np.ones((2, 1)), "margin", min_margin=0.5)[0].decision == "accept"


def test_unknown_rule_and_bad_parameters_say_what_to_do():
    with pytest.raises(ValueError, match="choose one of argmax, threshold, margin, entropy"):
        decide(PROBA, "vibes")
    with pytest.raises(ValueError, match="within"):
        decide(PROBA, "threshold", threshold=1.5)
    with pytest.raises(ValueError, match="bad parameters"):
        decide(PROBA, "threshold", min_margin=0.1)
    with pytest.raises(ValueError, match="2-d"):
        decide(np.array([0.5, 0.5]), "argmax")


def test_empty_input_gives_no_decisions():
    assert decide(np.zeros((0, 3)), "threshold") == []
