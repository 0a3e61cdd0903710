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
- ``random``: a uniform sample without replacement, seeded by ``random_state`` (the study's baseline).

modAL's ``random_tie_break`` draws from numpy's global RNG, so it is never used; ties are broken by pool
order. An estimator that is not fitted yet makes every item equally uncertain; ``query`` then picks at
random (seeded), which is the right cold start.
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
STRATEGIES = (*_MODAL_STRATEGIES, "random")


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
) -> Query:
    """Choose up to ``n_instances`` rows of ``X_pool`` (embeddings) for annotation with ``strategy``."""
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown query strategy {strategy!r}; choose one of {', '.join(STRATEGIES)}")
    if n_instances < 0:
        raise ValueError(f"n_instances must be >= 0, got {n_instances}")
    X_pool = np.asarray(X_pool)
    n_instances = min(int(n_instances), len(X_pool))
    if n_instances == 0:
        return Query(np.zeros(0, dtype=np.int64), np.zeros(0), strategy)

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
