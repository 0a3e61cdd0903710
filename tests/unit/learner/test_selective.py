"""Thresholds with a promise, on made-up confidences whose true accuracy is known."""

import numpy as np
import pytest

from learner.rules import decide
from learner.selective import (
    calibrate_precision_rule,
    choose_threshold,
    error_upper_bound,
    fit_temperature,
    temperature_scale,
)


def calibrated_holdout(n, n_classes=5, seed=0):
    """Probabilities whose max is the true chance of being right (a perfectly calibrated model)."""
    rng = np.random.default_rng(seed)
    top = rng.uniform(1 / n_classes, 1.0, n)
    predicted = rng.integers(0, n_classes, n)
    proba = np.tile(((1 - top) / (n_classes - 1))[:, None], (1, n_classes))
    proba[np.arange(n), predicted] = top
    right = rng.random(n) < top
    other = (predicted + rng.integers(1, n_classes, n)) % n_classes
    return proba, np.where(right, predicted, other)


def test_the_bound_is_above_the_observed_error_rate_and_tightens_with_n():
    assert error_upper_bound(5, 100, 0.9) > 0.05
    assert error_upper_bound(50, 1000, 0.9) < error_upper_bound(5, 100, 0.9)
    assert error_upper_bound(0, 0, 0.9) == 1.0


def test_the_chosen_threshold_keeps_the_target_on_fresh_items_from_the_same_model():
    proba, truth = calibrated_holdout(2000)
    choice = choose_threshold(proba.max(axis=1), proba.argmax(axis=1) == truth, 0.9, 0.9)
    assert choice.threshold is not None and 0.8 < choice.threshold < 1.0  # precision above t is (1 + t) / 2
    fresh, fresh_truth = calibrated_holdout(20000, seed=1)
    accepted = fresh.max(axis=1) >= choice.threshold
    assert (fresh.argmax(axis=1) == fresh_truth)[accepted].mean() >= 0.9
    assert 0.05 < accepted.mean() < 0.6


def test_no_threshold_when_the_holdout_is_too_small_to_promise_anything():
    proba, truth = calibrated_holdout(30)
    choice = choose_threshold(proba.max(axis=1), proba.argmax(axis=1) == truth, 0.95, 0.9)
    assert choice.threshold is None and choice.coverage == 0.0


def test_calibration_records_the_promise_and_the_cross_fitted_precision():
    proba, truth = calibrated_holdout(3000, seed=2)
    promise = calibrate_precision_rule(proba, truth, 0.9, 0.9)
    assert promise.threshold is not None
    assert promise.cross_fitted_precision >= 0.85
    assert 0 < promise.cross_fitted_coverage < 1 and len(promise.folds) == 2
    assert "90% precision promised" in promise.reason
    assert type(promise).from_dict(promise.to_dict()) == promise


def test_when_no_threshold_keeps_the_promise_everything_goes_to_review():
    proba, truth = calibrated_holdout(200, seed=3)
    promise = calibrate_precision_rule(proba, truth, 0.999, 0.9)
    assert promise.threshold is None and promise.coverage == 0.0
    assert "everything goes to review" in promise.reason
    decisions = decide(proba[:5], "precision", threshold=promise.threshold)
    assert {d.decision for d in decisions} == {"review"}


def test_the_precision_rule_accepts_at_and_above_its_threshold():
    proba = np.array([[0.97, 0.03], [0.6, 0.4]])
    decisions = decide(proba, "precision", threshold=0.9, target_precision=0.95)
    assert [d.decision for d in decisions] == ["accept", "review"]
    assert "95% precision" in decisions[0].reason


def test_temperature_scaling_softens_an_overconfident_model():
    proba, truth = calibrated_holdout(3000, seed=4)
    overconfident = temperature_scale(proba, 0.4)
    temperature = fit_temperature(overconfident, truth)
    assert temperature == pytest.approx(0.4 ** -1, rel=0.3)
    assert np.array_equal(temperature_scale(overconfident, temperature).argmax(axis=1), overconfident.argmax(axis=1))
    promise = calibrate_precision_rule(overconfident, truth, 0.9, 0.9, temperature_scaling=True)
    assert promise.temperature > 1.5 and promise.threshold is not None
