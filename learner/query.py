"""Which pool items to send to annotators next.

We call modAL's query-strategy *functions* (``modAL.uncertainty``) on our own fitted estimator and never
use ``modAL.models.ActiveLearner``: its ``teach``/``fit`` pass ``force_all_finite=`` to scikit-learn's
``check_X_y``, which scikit-learn >= 1.8 renamed (``ensure_all_finite``), so they fail with a TypeError.
The strategy functions only call ``estimator.predict_proba`` and work unchanged. Pool bookkeeping (which
items are labelled) stays with the caller, keyed by stable item ids, and retraining is
:class:`learner.head.SoftmaxHead` with ``warm_start``. ``modAL.dropout`` imports torch and is never imported.

Strategies:

- ``least_confidence`` (modAL ``uncertainty_sampling``): highest ``1 - max probability`` first;
- ``margin`` (modAL ``margin_sampling``): smallest top-1 minus top-2 probability first;
- ``entropy`` (modAL ``entropy_sampling``): highest entropy first;
- ``random``: a uniform sample without replacement, seeded by ``random_state`` (the study's baseline);
- ``typical`` and ``coverage`` (:mod:`learner.selection`: TypiClust, ProbCover): from the embeddings alone,
  usable with no label at all; they take the labelled rows (``X_labelled``) into account when given;
- ``diverse_margin``: the smallest margin in each of ``n`` k-means clusters of the least sure rows;
- ``auto`` (the service's default): ``typical`` while there are fewer than ``AUTO_SWITCH_PER_CLASS`` labels
  per class, then ``diverse_margin``; while a class has no label yet (``n_classes`` given and the estimator
  has seen fewer), half of each batch stays ``typical`` to seek it out. The switch point was measured
  (``benchmarks/auto_switch.py``, tuning seeds disjoint from the reported ones).

modAL's ``random_tie_break`` draws from numpy's global RNG, so it is never used; ties are broken by pool
order. An estimator that is not fitted yet makes every item equally uncertain; the modAL strategies then
pick at random (seeded), ``auto`` / ``typical`` / ``coverage`` by the pool's shape.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
from modAL.uncertainty import entropy_sampling, margin_sampling, uncertainty_sampling
from sklearn.exceptions import NotFittedError
from sklearn.utils.validation import check_is_fitted, check_random_state

logger = logging.getLogger(__name__)

_MODAL_STRATEGIES: dict[str, tuple[Callable[..., Any], bool]] = {
    # name: (modAL function, whether a larger score is more informative)
    "least_confidence": (uncertainty_sampling, True),
    "margin": (margin_sampling, False),
    "entropy": (entropy_sampling, True),
}
COLD_START_STRATEGIES = ("typical", "coverage")
STRATEGIES = ("auto", *_MODAL_STRATEGIES, "diverse_margin", *COLD_START_STRATEGIES, "random")
#: ``auto`` switches from typical picks to diverse margin at this many labels per class.
AUTO_SWITCH_PER_CLASS = 3.0


@dataclass(frozen=True)
class Query:
    """The chosen pool rows, most informative first, and each one's score under the strategy."""

    indices: np.ndarray  # int64 row numbers into the pool array
    scores: np.ndarray  # float64: 1 - max p, margin, or entropy; NaN for random
    strategy: str


def query(
    estimator: Any,
    X_pool: np.ndarray,
    n_instances: int,
    strategy: str = "least_confidence",
    random_state: Any = None,
    X_labelled: np.ndarray | None = None,
    n_classes: int | None = None,
    switch_per_class: float = AUTO_SWITCH_PER_CLASS,
) -> Query:
    """Choose up to ``n_instances`` rows of ``X_pool`` (embeddings) for annotation with ``strategy``.

    ``X_labelled`` (the embeddings already labelled) and ``n_classes`` (how many classes exist) are used by
    ``typical``, ``coverage`` and ``auto``; the modAL strategies ignore them.
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown query strategy {strategy!r}; choose one of {', '.join(STRATEGIES)}")
    if n_instances < 0:
        raise ValueError(f"n_instances must be >= 0, got {n_instances}")
    X_pool = np.asarray(X_pool)
    n_instances = min(int(n_instances), len(X_pool))
    if n_instances == 0:
        return Query(np.zeros(0, dtype=np.int64), np.zeros(0), strategy)

    if strategy in ("auto", "diverse_margin", *COLD_START_STRATEGIES):
        return _query_by_shape(estimator, X_pool, n_instances, strategy, random_state, X_labelled, n_classes,
                               switch_per_class)
    if strategy != "random":
        try:
            check_is_fitted(estimator)
        except NotFittedError:
            logger.info("estimator not fitted yet: choosing %d pool items at random", n_instances)
            strategy_used = "random"
        else:
            strategy_used = strategy
    else:
        strategy_used = "random"

    if strategy_used == "random":
        rng = check_random_state(random_state)
        indices = rng.choice(len(X_pool), size=n_instances, replace=False)
        return Query(indices.astype(np.int64), np.full(n_instances, np.nan), strategy)

    function, larger_is_better = _MODAL_STRATEGIES[strategy_used]
    indices, scores = function(estimator, X_pool, n_instances=n_instances)
    indices = np.asarray(indices, dtype=np.int64)
    scores = np.asarray(scores, dtype=np.float64)
    # argpartition leaves the chosen rows unordered: most informative first, ties by pool order.
    order = np.lexsort((indices, -scores if larger_is_better else scores))
    return Query(indices[order], scores[order], strategy)


def _fitted(estimator: Any) -> bool:
    try:
        check_is_fitted(estimator)
    except NotFittedError:
        return False
    return True


def _query_by_shape(
    estimator: Any, X_pool: np.ndarray, n_instances: int, strategy: str, random_state: Any,
    X_labelled: np.ndarray | None, n_classes: int | None, switch_per_class: float,
) -> Query:
    from learner.selection import coverage_picks, diverse_margin_picks, typical_picks

    rng = check_random_state(random_state)
    if strategy == "coverage":
        indices = coverage_picks(X_pool, n_instances, X_labelled, random_state=rng)
        return Query(indices, np.full(len(indices), np.nan), strategy)
    fitted = estimator is not None and _fitted(estimator)
    n_labelled = 0 if X_labelled is None else len(X_labelled)
    n_seen = len(estimator.classes_) if fitted else 0
    n_known = max(n_classes or 0, n_seen)
    cold = not fitted or n_labelled < switch_per_class * max(n_known, 1)
    if strategy == "typical" or (strategy == "auto" and cold):
        indices = typical_picks(X_pool, n_instances, X_labelled, random_state=rng)
        return Query(indices, np.full(len(indices), np.nan), strategy)
    if not fitted:  # diverse_margin before any model: the pool's shape is all there is
        indices = typical_picks(X_pool, n_instances, X_labelled, random_state=rng)
        return Query(indices, np.full(len(indices), np.nan), strategy)
    n_seek = (n_instances + 1) // 2 if strategy == "auto" and n_classes and n_seen < n_classes else 0
    seek = typical_picks(X_pool, n_seek, X_labelled, random_state=rng) if n_seek else np.zeros(0, np.int64)
    rest = np.setdiff1d(np.arange(len(X_pool)), seek)
    proba = estimator.predict_proba(X_pool[rest])
    picks, margins = diverse_margin_picks(proba, X_pool[rest], n_instances - len(seek), random_state=rng)
    indices = np.concatenate([seek, rest[picks]]).astype(np.int64)
    scores = np.concatenate([np.full(len(seek), np.nan), margins])
    return Query(indices, scores, strategy)
