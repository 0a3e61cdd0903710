"""Thresholds with a promise: pick the max-probability threshold whose auto-accepted predictions keep a precision.

The origin study asked whether softmax outputs are probabilities at all, and answered itself: a probability
is only the pair (decision rule, holdout it was measured on). This module makes that pair explicit. Given a
model's probabilities on a labelled holdout, :func:`choose_threshold` returns the lowest threshold ``t`` on the
max probability such that, with confidence ``risk_confidence``, the accuracy of the predictions with
``max p >= t`` is at least ``target_precision``:

- for each candidate threshold (the holdout's own max probabilities, highest first) the accepted items'
  error count is bounded above by the one-sided Clopper-Pearson bound at ``risk_confidence``;
- candidates are tested in that fixed order and the scan stops at the first one whose bound exceeds
  ``1 - target_precision`` (fixed-sequence testing, as in Learn-then-Test, Angelopoulos et al. 2021; the
  selective-risk bound of Geifman and El-Yaniv 2017). Thresholds accepting too few items for any bound to
  pass are skipped, not failed: that depends on the counts alone, never on the labels;
- no passing threshold means no promise can be kept: every prediction goes to review.

:func:`calibrate_precision_rule` adds what a report needs: optional temperature scaling (one scalar ``T`` on
the log-probabilities, fitted by holdout log-loss), and **cross-fitting**: the holdout is split in two, each
half chooses a threshold the other half measures, so the realised precision and coverage reported were not
measured on the items that chose them. The served threshold is chosen on the whole holdout.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.stats import beta

DEFAULT_TARGET_PRECISION = 0.95
DEFAULT_RISK_CONFIDENCE = 0.9


def error_upper_bound(errors: np.ndarray | int, n: np.ndarray | int, confidence: float) -> np.ndarray:
    """One-sided Clopper-Pearson upper bound on an error rate from ``errors`` of ``n`` (1.0 when n is 0)."""
    errors = np.asarray(errors, dtype=np.float64)
    n = np.asarray(n, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        bound = beta.ppf(confidence, errors + 1, np.maximum(n - errors, 1e-12))
    return np.where((n <= 0) | (errors >= n), 1.0, bound)


def temperature_scale(proba: np.ndarray, temperature: float) -> np.ndarray:
    """Softmax of ``log(proba) / temperature``: T > 1 softens, T < 1 sharpens; argmax is unchanged."""
    proba = np.asarray(proba, dtype=np.float64)
    if temperature == 1.0:
        return proba
    logits = np.log(np.clip(proba, 1e-12, 1.0)) / temperature
    logits -= logits.max(axis=1, keepdims=True)
    scaled = np.exp(logits)
    return scaled / scaled.sum(axis=1, keepdims=True)


def fit_temperature(proba: np.ndarray, true_index: np.ndarray) -> float:
    """The temperature minimising the log-loss of ``proba`` on the true class indices (within [0.05, 20])."""
    true_index = np.asarray(true_index, dtype=np.int64)
    rows = np.arange(len(true_index))

    def log_loss(log_t: float) -> float:
        return -float(np.mean(np.log(np.clip(temperature_scale(proba, math.exp(log_t))[rows, true_index], 1e-12, 1))))

    found = minimize_scalar(log_loss, bounds=(math.log(0.05), math.log(20.0)), method="bounded")
    return float(math.exp(found.x))


@dataclass(frozen=True)
class ThresholdChoice:
    """The chosen threshold (None: none keeps the promise) and what it does on the items that chose it."""

    threshold: float | None
    n: int
    accepted: int
    errors: int
    error_bound: float | None  # the Clopper-Pearson bound that passed

    @property
    def coverage(self) -> float:
        return self.accepted / self.n if self.n else 0.0


def choose_threshold(
    scores: np.ndarray, correct: np.ndarray, target_precision: float = DEFAULT_TARGET_PRECISION,
    risk_confidence: float = DEFAULT_RISK_CONFIDENCE,
) -> ThresholdChoice:
    """The lowest threshold on ``scores`` keeping precision >= target with ``risk_confidence`` (see the docstring)."""
    if not 0 < target_precision < 1:
        raise ValueError(f"target_precision must be within (0, 1), got {target_precision}")
    if not 0 < risk_confidence < 1:
        raise ValueError(f"risk_confidence must be within (0, 1), got {risk_confidence}")
    scores = np.asarray(scores, dtype=np.float64)
    correct = np.asarray(correct, dtype=bool)
    if scores.shape != correct.shape or scores.ndim != 1:
        raise ValueError(f"scores {scores.shape} and correct {correct.shape} must be matching 1-d arrays")
    n = len(scores)
    if n == 0:  # a fold of a one-item holdout (a reserved holdout's first label): nothing supports a threshold
        return ThresholdChoice(None, 0, 0, 0, None)
    order = np.argsort(-scores, kind="stable")
    sorted_scores = scores[order]
    errors = np.cumsum(~correct[order])
    # A threshold equal to a score accepts every item with that score: keep the last row of each tie.
    last = np.flatnonzero(np.r_[sorted_scores[1:] != sorted_scores[:-1], True])
    accepted = last + 1
    bounds = error_upper_bound(errors[last], accepted, risk_confidence)
    allowed = 1 - target_precision
    # The least any bound can be with zero errors; thresholds below it are skipped, whatever the labels say.
    testable = error_upper_bound(0, accepted, risk_confidence) <= allowed
    chosen = None
    for j in np.flatnonzero(testable):
        if bounds[j] > allowed:
            break
        chosen = j
    if chosen is None:
        return ThresholdChoice(None, n, 0, 0, None)
    return ThresholdChoice(float(sorted_scores[last[chosen]]), n, int(accepted[chosen]), int(errors[last[chosen]]),
                           float(bounds[chosen]))


@dataclass(frozen=True)
class PrecisionPromise:
    """What the ``precision`` rule promises for one model version, and what it delivered on unseen items."""

    target_precision: float
    risk_confidence: float
    threshold: float | None  # None: no threshold keeps the promise, everything goes to review
    temperature: float
    n_holdout: int
    coverage: float  # on the whole holdout, with the served threshold
    holdout_precision: float | None  # on the same items (optimistic: they chose the threshold)
    cross_fitted_coverage: float
    cross_fitted_precision: float | None  # each half's threshold measured on the other half
    cross_fitted_accepted: int
    folds: list[dict[str, Any]] = field(default_factory=list)

    @property
    def reason(self) -> str:
        """One line for people."""
        if self.threshold is None:
            return (f"no threshold keeps {self.target_precision:.0%} precision with {self.risk_confidence:.0%} "
                    f"confidence on this holdout ({self.n_holdout} items): everything goes to review")
        return (f"accept when max probability >= {self.threshold:.3f}: {self.target_precision:.0%} precision promised "
                f"with {self.risk_confidence:.0%} confidence, {self.coverage:.0%} of the holdout accepted")

    def to_dict(self) -> dict[str, Any]:
        document = dict(self.__dict__)
        document["reason"] = self.reason
        return document

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "PrecisionPromise":
        """Read back :meth:`to_dict`."""
        return cls(**{key: value for key, value in data.items() if key != "reason"})


def _scores(proba: np.ndarray, temperature: float) -> np.ndarray:
    return temperature_scale(proba, temperature).max(axis=1)


def calibrate_precision_rule(
    proba: np.ndarray,
    true_index: np.ndarray,
    target_precision: float = DEFAULT_TARGET_PRECISION,
    risk_confidence: float = DEFAULT_RISK_CONFIDENCE,
    temperature_scaling: bool = False,
    random_state: int = 0,
) -> PrecisionPromise:
    """Choose the served threshold on the whole holdout and measure the promise by two-fold cross-fitting."""
    proba = np.asarray(proba, dtype=np.float64)
    true_index = np.asarray(true_index, dtype=np.int64)
    if proba.ndim != 2 or len(proba) != len(true_index) or len(proba) == 0:
        raise ValueError(f"proba {proba.shape} and true_index {true_index.shape} must match and not be empty")
    correct = proba.argmax(axis=1) == true_index

    def fitted(rows: np.ndarray) -> tuple[float, ThresholdChoice]:
        temperature = fit_temperature(proba[rows], true_index[rows]) if temperature_scaling else 1.0
        return temperature, choose_threshold(_scores(proba[rows], temperature), correct[rows], target_precision,
                                             risk_confidence)

    temperature, served = fitted(np.arange(len(proba)))
    scores = _scores(proba, temperature)
    accepted = scores >= served.threshold if served.threshold is not None else np.zeros(len(proba), dtype=bool)

    rng = np.random.default_rng(random_state)
    order = rng.permutation(len(proba))
    halves = (order[: len(order) // 2], order[len(order) // 2:])
    folds, total_accepted, total_correct = [], 0, 0
    for choose_on, measure_on in (halves, halves[::-1]):
        fold_temperature, choice = fitted(choose_on)
        if choice.threshold is None:
            taken = np.zeros(len(measure_on), dtype=bool)
        else:
            taken = _scores(proba[measure_on], fold_temperature) >= choice.threshold
        total_accepted += int(taken.sum())
        total_correct += int(correct[measure_on][taken].sum())
        folds.append({
            "threshold": choice.threshold, "temperature": fold_temperature, "chosen_on": len(choose_on),
            "measured_on": len(measure_on), "accepted": int(taken.sum()),
            "precision": float(correct[measure_on][taken].mean()) if taken.any() else None,
        })
    return PrecisionPromise(
        target_precision=float(target_precision),
        risk_confidence=float(risk_confidence),
        threshold=served.threshold,
        temperature=float(temperature),
        n_holdout=int(len(proba)),
        coverage=float(accepted.mean()),
        holdout_precision=float(correct[accepted].mean()) if accepted.any() else None,
        cross_fitted_coverage=total_accepted / len(proba),
        cross_fitted_precision=total_correct / total_accepted if total_accepted else None,
        cross_fitted_accepted=total_accepted,
        folds=folds,
    )
