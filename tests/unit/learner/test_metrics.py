"""Holdout metrics on hand-made arrays with answers worked out by hand."""

from __future__ import annotations

import json

import numpy as np
import pytest

from learner.metrics import evaluate

CLASSES = ["cat", "dog", "fox"]
Y_TRUE = np.array(["cat", "cat", "dog", "dog", "fox"])
PROBA = np.array(
    [
        [0.90, 0.05, 0.05],  # cat -> cat, sure
        [0.30, 0.60, 0.10],  # cat -> dog, middling; P(true) 0.3
        [0.10, 0.85, 0.05],  # dog -> dog, sure
        [0.20, 0.45, 0.35],  # dog -> dog, unsure; P(true) 0.45
        [0.40, 0.15, 0.45],  # fox -> fox, unsure; P(true) 0.45
    ]
)


def test_accuracy_coverage_and_selective_accuracy():
    result = evaluate(Y_TRUE, PROBA, CLASSES, thresholds=(0.5, 0.8))
    assert result.accuracy == pytest.approx(4 / 5)
    at_half, at_08 = result.thresholds
    # max p >= 0.5: rows 0, 1, 2 -> 3 of 5 accepted, 2 of them right
    assert at_half.coverage == pytest.approx(3 / 5)
    assert at_half.selective_accuracy == pytest.approx(2 / 3)
    # max p >= 0.8: rows 0 and 2, both right
    assert at_08.coverage == pytest.approx(2 / 5)
    assert at_08.selective_accuracy == pytest.approx(1.0)


def test_study_figure_uses_the_true_class_probability():
    result = evaluate(Y_TRUE, PROBA, CLASSES, thresholds=(0.5, 0.8))
    # P(true) = 0.9, 0.3, 0.85, 0.45, 0.45
    assert result.thresholds[0].p_true_above == pytest.approx(2 / 5)
    assert result.thresholds[1].p_true_above == pytest.approx(2 / 5)


def test_per_class_accuracy_and_confusion():
    result = evaluate(Y_TRUE, PROBA, CLASSES)
    assert result.per_class_accuracy == {"cat": 0.5, "dog": 1.0, "fox": 1.0}
    np.testing.assert_array_equal(result.confusion, [[1, 1, 0], [0, 2, 0], [0, 0, 1]])


def test_absent_class_and_nothing_accepted():
    result = evaluate(["cat"], np.array([[0.4, 0.35, 0.25]]), CLASSES, thresholds=(0.9,))
    assert result.per_class_accuracy["dog"] is None
    assert result.thresholds[0].coverage == 0.0
    assert result.thresholds[0].selective_accuracy is None


def test_to_dict_is_json_ready():
    document = evaluate(np.array([0, 1]), np.array([[0.7, 0.3], [0.2, 0.8]]), np.array([0, 1])).to_dict()
    decoded = json.loads(json.dumps(document))
    assert decoded["accuracy"] == 1.0
    assert decoded["classes"] == [0, 1]
    assert decoded["confusion"] == [[1, 0], [0, 1]]


def test_mismatched_inputs_are_refused():
    with pytest.raises(ValueError, match="expected"):
        evaluate(Y_TRUE, PROBA[:, :2], CLASSES)
    with pytest.raises(ValueError, match="labels for"):
        evaluate(Y_TRUE[:2], PROBA, CLASSES)
    with pytest.raises(ValueError, match="not among"):
        evaluate(["wolf"] * 5, PROBA, CLASSES)
    with pytest.raises(ValueError, match="empty"):
        evaluate([], np.zeros((0, 3)), CLASSES)


def test_wilson_interval_brackets_the_share_and_narrows_with_n():
    from learner.metrics import wilson_interval

    small = wilson_interval(8, 10)
    large = wilson_interval(800, 1000)
    assert small[0] < 0.8 < small[1] and large[0] < 0.8 < large[1]
    assert large[1] - large[0] < (small[1] - small[0]) / 3
    assert wilson_interval(10, 10)[1] == pytest.approx(1.0) and wilson_interval(10, 10)[0] > 0.6
    assert wilson_interval(0, 0) == (0.0, 1.0)


def test_evaluation_json_carries_the_accuracy_interval():
    proba = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7]])
    document = evaluate(["a", "b", "b", "b"], proba, ["a", "b"]).to_dict()
    low, high = document["accuracy_interval"]
    assert low < document["accuracy"] == 0.75 < high
