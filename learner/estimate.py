"""An accuracy estimate from the actively picked training labels, unbiased by importance weights (LURE).

Actively picked labels are not a random sample of the pool: the naive accuracy on them is biased (an
uncertainty strategy picks the hard rows, so it reads low). Active testing (Kossen et al. 2021) and LURE
(Farquhar et al. 2021) remove the bias when every pick was *drawn* from a known proposal ``q``: the ``m``-th of
``M`` picks, drawn without replacement from a pool of ``N`` with probability ``q_m`` among the ``N - m + 1``
rows left, gets the weight

    v_m = 1 + (N - M) / (N - m) * (1 / ((N - m + 1) q_m) - 1)

and ``mean(v_m * loss_m)`` is an unbiased estimate of the pool's mean loss (a uniform draw has every
``v_m = 1``). The loss here is the 0-1 error, so ``1 - mean(v_m * error_m)`` estimates the accuracy; top-k picks
have no ``q``, which is why :func:`learner.query.sampled_query` draws the batch and records ``q`` of every pick.

Which model's errors: a training label cannot judge the model trained on it. Two choices were open: score each
label by the version trained before it was picked (the model that chose it), or by its out-of-fold correctness
(:func:`learner.oof.out_of_fold_proba`: a head fitted on the other folds, on cached embeddings). The first
measures a mixture of *older* versions, weaker the earlier the label (biased low for the current version,
most where it matters: early, when labels are few and the curve steep); out-of-fold heads see 80% of the
current labels (five folds), so they sit a fifth of a step back on the learning curve of the version being
measured. We use out-of-fold correctness (:func:`oof_correct`); the small pessimism that remains is measured
against 2,000 unseen images in ``benchmarks/holdout_quality.py``, not assumed away.

The 95% interval is the wider of two: the normal one on the weighted terms' variance (``1.96 * sd(v * error) /
sqrt(M)``: the terms are what the mean is taken over, and their spread grows as the weights do) and the Wilson
interval the holdout uses (:func:`learner.metrics.wilson_interval`) at the weights' effective sample size
``(sum v)^2 / sum v^2`` (Kish), which does not collapse to a point when every sampled label happens to be right.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

#: The two-sided 95% normal quantile.
Z_95 = 1.959963984540054


@dataclass(frozen=True)
class WeightedEstimate:
    """The importance-weighted accuracy of sampled labels, its 95% interval and the naive (biased) mean."""

    accuracy: float
    low: float
    high: float
    n_labels: int
    n_pool: int
    naive_accuracy: float

    def to_dict(self) -> dict[str, Any]:
        return {"accuracy": self.accuracy, "interval": [self.low, self.high], "n_labels": self.n_labels,
                "n_pool": self.n_pool, "naive_accuracy": self.naive_accuracy}


def lure_weights(q: np.ndarray, n_pool: int) -> np.ndarray:
    """LURE's weight ``v_m`` of each pick, in pick order; ``q[m-1]`` its probability among the rows left."""
    q = np.asarray(q, dtype=np.float64).reshape(-1)
    n_picks = len(q)
    if n_picks > n_pool:
        raise ValueError(f"{n_picks} picks cannot come from a pool of {n_pool}")
    if n_picks and (np.any(q <= 0) or np.any(q > 1)):
        raise ValueError("every pick's probability must be in (0, 1]: a pick the proposal could not draw has no weight")
    m = np.arange(1, n_picks + 1, dtype=np.float64)
    left = n_pool - m  # rows the proposal did not reach after pick m
    with np.errstate(divide="ignore", invalid="ignore"):
        # The last row of an exhausted pool (m = N = M) was certain to be drawn: its weight is 1.
        factor = np.where(left > 0, (n_pool - n_picks) / np.where(left > 0, left, 1.0), 0.0)
    return 1.0 + factor * (1.0 / ((n_pool - m + 1) * q) - 1.0)


def weighted_accuracy(correct: np.ndarray, q: np.ndarray, n_pool: int) -> WeightedEstimate:
    """LURE's accuracy estimate from picks in draw order: ``correct[m]`` (bool) and ``q[m]`` of each."""
    correct = np.asarray(correct, dtype=bool).reshape(-1)
    q = np.asarray(q, dtype=np.float64).reshape(-1)
    if len(correct) != len(q):
        raise ValueError(f"{len(correct)} correctness values for {len(q)} pick probabilities")
    if not len(correct):
        raise ValueError("no sampled labels to estimate from")
    from learner.metrics import wilson_interval

    weights = lure_weights(q, n_pool)
    terms = weights * (~correct)
    accuracy = 1.0 - float(terms.mean())
    half = Z_95 * float(terms.std(ddof=1)) / np.sqrt(len(terms)) if len(terms) > 1 else 1.0
    n_effective = max(1, round(float(weights.sum() ** 2 / np.sum(weights**2))))
    wilson_low, wilson_high = wilson_interval(min(max(accuracy, 0.0), 1.0) * n_effective, n_effective)
    return WeightedEstimate(accuracy, max(0.0, min(accuracy - half, wilson_low)),
                            min(1.0, max(accuracy + half, wilson_high)), len(correct), int(n_pool), float(correct.mean()))


def oof_correct(make_head: Callable[[], Any], X: np.ndarray, y: np.ndarray, n_classes: int, seed: int = 0,
               X_unlabelled: np.ndarray | None = None) -> np.ndarray:
    """Whether each labelled row's out-of-fold prediction is right (:func:`learner.oof.out_of_fold_proba`)."""
    from learner.oof import out_of_fold_proba

    y = np.asarray(y, dtype=np.int64)
    if not len(y) or int(np.bincount(y).max()) < 2:  # every class a singleton: no head that never saw a row's class
        return np.zeros(len(y), dtype=bool)        # can get it right, so no fit is needed to say so
    proba = out_of_fold_proba(make_head, X, y, n_classes, seed=seed, X_unlabelled=X_unlabelled)
    return np.argmax(proba, axis=1) == np.asarray(y)


def oof_weighted_accuracy(make_head: Callable[[], Any], X: np.ndarray, y: np.ndarray, q: np.ndarray, n_pool: int,
                          n_classes: int, seed: int = 0, X_unlabelled: np.ndarray | None = None) -> WeightedEstimate:
    """The estimate for a version trained on ``X, y`` (in pick order, each with its ``q``): out-of-fold, weighted."""
    correct = oof_correct(make_head, X, y, n_classes, seed=seed, X_unlabelled=X_unlabelled)
    return weighted_accuracy(correct, q, n_pool)
