"""Which pool items to send to annotators next.

We call modAL's query-strategy *functions* (``modAL.uncertainty``) on our own fitted estimator and never
use ``modAL.models.ActiveLearner``: its ``teach``/``fit`` pass ``force_all_finite=`` to scikit-learn's
``check_X_y``, which scikit-learn >= 1.8 renamed (``ensure_all_finite``), so they fail with a TypeError.
The strategy functions only call ``estimator.predict_proba`` and work unchanged. Pool bookkeeping (which
items are labelled) stays with the caller, keyed by stable item ids, and retraining is
:class:`learner.head.SoftmaxHead` with ``warm_start``. ``modAL.dropout`` imports torch and is never imported.

Every strategy is registered once, in :data:`STRATEGIES`: its name, the function that picks the rows,
whether it needs a fitted model, and a one-line summary. The settings, the trainer and the example config
read this registry. ``typical`` and ``coverage`` (:mod:`learner.selection`: TypiClust, ProbCover) choose
from the embeddings alone and take the labelled rows (``X_labelled``) into account when given. ``auto``,
the service's default, is ``typical`` while there are fewer than ``AUTO_SWITCH_PER_CLASS`` labels per
class and then ``diverse_margin``; while a class has no label yet (``n_classes`` given and the estimator
has seen fewer), half of each batch stays ``typical`` to seek it out. The switch point was measured
(``benchmarks/auto_switch.py``, tuning seeds disjoint from the reported ones).

modAL's ``random_tie_break`` draws from numpy's global RNG, so it is never used; ties are broken by pool
order. An estimator that is not fitted yet makes every item equally uncertain; the strategies that need a
model then pick at random (seeded), ``auto`` / ``typical`` / ``diverse_margin`` / ``coverage`` by the
pool's shape.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Callable, Mapping

import numpy as np
from modAL.uncertainty import classifier_entropy, classifier_margin, classifier_uncertainty
from sklearn.exceptions import NotFittedError
from sklearn.utils.validation import check_is_fitted, check_random_state

logger = logging.getLogger(__name__)

#: ``auto`` switches from typical picks to diverse margin at this many labels per class.
AUTO_SWITCH_PER_CLASS = 3.0
#: Pool rows scored per ``predict_proba`` call: a pool of any size is scored in chunks of this many rows.
SCORE_CHUNK = 8192
#: ``diverse_margin`` and ``auto`` look for their least sure rows among a seeded sample of this many pool rows
#: (the whole pool below it), so their cost stops growing with the pool; the modAL strategies score every row.
#: The default of :func:`query`'s ``margin_sample`` (the service's ``learner.pool_sample.margin``).
MARGIN_SAMPLE = 100_000


@dataclass(frozen=True)
class Query:
    """The chosen pool rows, most informative first, and each one's score under the strategy."""

    indices: np.ndarray  # int64 row numbers into the pool array
    scores: np.ndarray  # float64: 1 - max p, margin, or entropy; NaN where the strategy has no score
    strategy: str


@dataclass(frozen=True)
class Pick:
    """What a strategy's function is given: the pool and everything a strategy may use to rank it."""

    estimator: Any
    X_pool: np.ndarray
    n_instances: int  # 1 <= n_instances <= len(X_pool)
    rng: np.random.RandomState
    X_labelled: np.ndarray | None
    n_classes: int | None
    switch_per_class: float
    margin_sample: int | None = None  # None: MARGIN_SAMPLE
    cluster_sample: int | None = None  # None: learner.selection.MAX_ROWS


@dataclass(frozen=True)
class Strategy:
    """A query strategy: its name, the function choosing rows (indices, scores), whether it needs a fitted model."""

    name: str
    choose: Callable[[Pick], tuple[np.ndarray, np.ndarray]]
    needs_model: bool  # without a fitted model it can only pick at random
    summary: str


def query(
    estimator: Any,
    X_pool: np.ndarray,
    n_instances: int,
    strategy: str = "least_confidence",
    random_state: Any = None,
    X_labelled: np.ndarray | None = None,
    n_classes: int | None = None,
    switch_per_class: float = AUTO_SWITCH_PER_CLASS,
    margin_sample: int | None = None,
    cluster_sample: int | None = None,
) -> Query:
    """Choose up to ``n_instances`` rows of ``X_pool`` (embeddings) for annotation with ``strategy``.

    ``X_labelled`` (the embeddings already labelled) and ``n_classes`` (how many classes exist) are used by
    ``typical``, ``coverage`` and ``auto``; the modAL strategies ignore them. ``margin_sample`` (default
    :data:`MARGIN_SAMPLE`): ``diverse_margin`` and ``auto`` score a seeded sample of this many pool rows;
    ``cluster_sample`` (default :data:`learner.selection.MAX_ROWS`): ``typical``, ``coverage`` and ``auto``'s
    typical picks cluster a seeded sample of this many. At or above the pool's size the picks are the whole
    pool's; below it a round costs the sample, not the pool.
    """
    chosen = get_strategy(strategy)
    if n_instances < 0:
        raise ValueError(f"n_instances must be >= 0, got {n_instances}")
    for name, size in (("margin_sample", margin_sample), ("cluster_sample", cluster_sample)):
        if size is not None and (isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 1):
            raise ValueError(f"{name} must be a positive integer (pool rows), got {size!r}")
    if not (hasattr(X_pool, "shape") and hasattr(X_pool, "__getitem__")):
        X_pool = np.asarray(X_pool)  # a list; arrays and lazy matrices (learner.cache.CachedRows) stay as they are
    n_instances = min(int(n_instances), len(X_pool))
    if n_instances == 0:
        return Query(np.zeros(0, dtype=np.int64), np.zeros(0), strategy)
    pick = Pick(estimator, X_pool, n_instances, check_random_state(random_state), X_labelled, n_classes,
                switch_per_class, margin_sample, cluster_sample)
    indices, scores = chosen.choose(pick)
    return Query(np.asarray(indices, dtype=np.int64), np.asarray(scores, dtype=np.float64), strategy)


def get_strategy(name: str) -> Strategy:
    """The registered strategy called ``name``; ``ValueError`` listing the valid names otherwise."""
    try:
        return STRATEGIES[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown query strategy {name!r}; choose one of {', '.join(STRATEGIES)}") from None


def _fitted(estimator: Any) -> bool:
    try:
        check_is_fitted(estimator)
    except NotFittedError:
        return False
    return True


def _unscored(indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return indices, np.full(len(indices), np.nan)


def _random(pick: Pick) -> tuple[np.ndarray, np.ndarray]:
    return _unscored(pick.rng.choice(len(pick.X_pool), size=pick.n_instances, replace=False))


def pool_scores(
    score: Callable[[Any, np.ndarray], np.ndarray], estimator: Any, X_pool: Any, rows: np.ndarray | None = None
) -> np.ndarray:
    """``score(estimator, X)`` (a modAL ``classifier_*`` function) of ``X_pool``'s ``rows`` (all by default),
    computed :data:`SCORE_CHUNK` rows at a time, so the model's temporaries stay chunk-sized and a lazy
    matrix (:class:`learner.cache.CachedRows`) is read a chunk at a time."""
    rows = np.arange(len(X_pool)) if rows is None else np.asarray(rows, dtype=np.int64)
    scores = np.empty(len(rows), dtype=np.float64)
    for start in range(0, len(rows), SCORE_CHUNK):
        chunk = rows[start : start + SCORE_CHUNK]
        if len(chunk) == len(X_pool) and isinstance(X_pool, np.ndarray):
            X = X_pool  # the whole pool in one chunk: no gather copy
        else:
            X = X_pool[chunk]
        scores[start : start + len(chunk)] = np.asarray(score(estimator, X), dtype=np.float64).reshape(-1)
    return scores


def best_rows(scores: np.ndarray, n: int, larger_is_better: bool) -> np.ndarray:
    """The ``n`` positions of the best ``scores``, best first, ties by position (pool order)."""
    key = -scores if larger_is_better else scores
    if n < len(key):
        # Everything strictly better than the n-th value, then the tied ones in pool order.
        nth = np.partition(key, n - 1)[n - 1]
        candidates = np.flatnonzero(key <= nth)
    else:
        candidates = np.arange(len(key))
    order = np.lexsort((candidates, key[candidates]))
    return candidates[order][:n].astype(np.int64)


def _modal(score: Callable[..., Any], larger_is_better: bool) -> Callable[[Pick], tuple[np.ndarray, np.ndarray]]:
    """A modAL uncertainty measure as a strategy: the pool scored in chunks, the best ``n`` rows; at random
    before the estimator is fitted."""

    def choose(pick: Pick) -> tuple[np.ndarray, np.ndarray]:
        if not _fitted(pick.estimator):
            logger.info("estimator not fitted yet: choosing %d pool items at random", pick.n_instances)
            return _random(pick)
        scores = pool_scores(score, pick.estimator, pick.X_pool)
        indices = best_rows(scores, pick.n_instances, larger_is_better)
        return indices, scores[indices]

    return choose


def _cluster_rows(pick: Pick) -> int:
    """How many pool rows the clustering strategies sample: the pick's ``cluster_sample`` or the library's default."""
    from learner.selection import MAX_ROWS

    return MAX_ROWS if pick.cluster_sample is None else int(pick.cluster_sample)


def _typical(pick: Pick, n_instances: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    from learner.selection import typical_picks

    n = pick.n_instances if n_instances is None else n_instances
    return _unscored(typical_picks(pick.X_pool, n, pick.X_labelled, random_state=pick.rng,
                                   max_rows=_cluster_rows(pick)))


def _coverage(pick: Pick) -> tuple[np.ndarray, np.ndarray]:
    from learner.selection import coverage_picks

    return _unscored(coverage_picks(pick.X_pool, pick.n_instances, pick.X_labelled, random_state=pick.rng,
                                    max_rows=_cluster_rows(pick)))


def _margin_among_clusters(pick: Pick, n_seek: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The smallest margin in each k-means cluster of the least sure rows, after ``n_seek`` typical picks.

    The pool (above ``pick.margin_sample`` rows, default :data:`MARGIN_SAMPLE`, a seeded sample of it) is scored
    once, in chunks; only the candidates (the least sure rows, ``CANDIDATES_PER_PICK`` per pick) are read again,
    for the clustering.
    """
    from learner.selection import CANDIDATES_PER_PICK, diverse_margin_from_margins

    seek = _typical(pick, n_seek)[0] if n_seek else np.zeros(0, np.int64)
    rest = np.setdiff1d(np.arange(len(pick.X_pool)), seek)
    sample = MARGIN_SAMPLE if pick.margin_sample is None else int(pick.margin_sample)
    if len(rest) > sample:  # a seeded sample: the cost follows the sample's size, not the pool
        rest = np.sort(pick.rng.choice(rest, size=sample, replace=False))
    n = pick.n_instances - len(seek)
    margins = pool_scores(classifier_margin, pick.estimator, pick.X_pool, rest)
    # The candidates, least sure first (ties by pool order), as diverse_margin_from_margins would choose them.
    candidates = best_rows(margins, min(len(rest), n * CANDIDATES_PER_PICK), larger_is_better=False)
    picks, chosen_margins = diverse_margin_from_margins(
        margins[candidates], _Rows(pick.X_pool, rest[candidates]), n, random_state=pick.rng
    )
    indices = np.concatenate([seek, rest[candidates[picks]]]).astype(np.int64)
    return indices, np.concatenate([np.full(len(seek), np.nan), chosen_margins])


class _Rows:
    """Rows ``rows`` of ``X`` without reading them: indexing reads only the rows asked for."""

    def __init__(self, X: Any, rows: np.ndarray) -> None:
        self.X, self.rows = X, rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: Any) -> np.ndarray:
        return np.asarray(self.X[self.rows[index]])


def _diverse_margin(pick: Pick) -> tuple[np.ndarray, np.ndarray]:
    if pick.estimator is None or not _fitted(pick.estimator):  # before any model the pool's shape is all there is
        return _typical(pick)
    return _margin_among_clusters(pick)


def _auto(pick: Pick) -> tuple[np.ndarray, np.ndarray]:
    fitted = pick.estimator is not None and _fitted(pick.estimator)
    n_labelled = 0 if pick.X_labelled is None else len(pick.X_labelled)
    n_seen = len(pick.estimator.classes_) if fitted else 0
    n_known = max(pick.n_classes or 0, n_seen)
    if not fitted or n_labelled < pick.switch_per_class * max(n_known, 1):
        return _typical(pick)
    n_seek = (pick.n_instances + 1) // 2 if pick.n_classes and n_seen < pick.n_classes else 0
    return _margin_among_clusters(pick, n_seek)


def _register(*strategies: Strategy) -> Mapping[str, Strategy]:
    return {strategy.name: strategy for strategy in strategies}


#: Every query strategy, by name, in the order they are listed to people.
STRATEGIES: Mapping[str, Strategy] = _register(
    Strategy("auto", _auto, needs_model=False,
             summary="typical picks while labels are few, then diverse_margin (the service's default)"),
    Strategy("least_confidence", _modal(classifier_uncertainty, larger_is_better=True), needs_model=True,
             summary="modAL uncertainty_sampling: highest 1 - max probability first"),
    Strategy("margin", _modal(classifier_margin, larger_is_better=False), needs_model=True,
             summary="modAL margin_sampling: smallest top-1 minus top-2 probability first"),
    Strategy("entropy", _modal(classifier_entropy, larger_is_better=True), needs_model=True,
             summary="modAL entropy_sampling: highest entropy first"),
    Strategy("diverse_margin", _diverse_margin, needs_model=False,
             summary="the smallest margin in each of n k-means clusters of the least sure rows"),
    Strategy("typical", _typical, needs_model=False,
             summary="TypiClust: the most typical row of each of the largest unlabelled clusters (no model needed)"),
    Strategy("coverage", _coverage, needs_model=False,
             summary="ProbCover: greedy maximum coverage of the embeddings (no model needed)"),
    Strategy("random", _random, needs_model=False,
             summary="a uniform sample without replacement, seeded by random_state (the study's baseline)"),
)  # fmt: skip


# -- sampled picks: a known proposal q for every pick (learner.estimate weighs them) ----------------------

#: Uniform share of the sampled proposal: every pool row can be drawn, so every row's weight is finite.
SAMPLE_EPSILON = 0.1
#: Softrank power over the strategy's order (Kirsch et al. 2023: p proportional to rank^-power).
SAMPLE_POWER = 1.0
#: The strategy ranks this many candidates per wanted pick; the rest of the pool gets only the uniform share.
SAMPLE_CANDIDATES = 4


@dataclass(frozen=True)
class SampledQuery:
    """Pool rows drawn one by one from a proposal, in draw order, and each one's probability when drawn.

    ``q[m]`` is the probability the ``m``-th pick had among the rows not drawn before it (the proposal
    renormalised over them), which is what :func:`learner.estimate.lure_weights` needs.
    """

    indices: np.ndarray  # int64 row numbers into the pool array, in draw order
    q: np.ndarray  # float64, each in (0, 1]
    strategy: str


def rank_proposal(n_pool: int, ranked: np.ndarray, power: float = SAMPLE_POWER,
                  epsilon: float = SAMPLE_EPSILON) -> np.ndarray:
    """A distribution over ``n_pool`` rows: ``1 - epsilon`` as ``rank^-power`` over ``ranked``, ``epsilon`` uniform."""
    if not 0 < epsilon <= 1:
        raise ValueError(f"epsilon must be in (0, 1] so every row can be drawn, got {epsilon}")
    ranked = np.asarray(ranked, dtype=np.int64)
    proposal = np.full(n_pool, epsilon / n_pool)
    if len(ranked) and epsilon < 1:
        preference = np.arange(1, len(ranked) + 1, dtype=np.float64) ** -float(power)
        proposal[ranked] += (1 - epsilon) * preference / preference.sum()
    else:
        proposal += (1 - epsilon) / n_pool
    return proposal


def draw_sequential(proposal: np.ndarray, n: int, rng: np.random.RandomState) -> tuple[np.ndarray, np.ndarray]:
    """``n`` rows drawn without replacement from ``proposal``; each one's probability among the rows left."""
    weights = np.asarray(proposal, dtype=np.float64).copy()
    indices, q = np.zeros(n, dtype=np.int64), np.zeros(n)
    for m in range(n):
        p = weights / weights.sum()
        row = int(rng.choice(len(p), p=p))
        indices[m], q[m] = row, p[row]
        weights[row] = 0.0
    return indices, q


def sampled_query(
    estimator: Any,
    X_pool: np.ndarray,
    n_instances: int,
    strategy: str = "auto",
    random_state: Any = None,
    X_labelled: np.ndarray | None = None,
    n_classes: int | None = None,
    switch_per_class: float = AUTO_SWITCH_PER_CLASS,
    epsilon: float = SAMPLE_EPSILON,
    power: float = SAMPLE_POWER,
    candidates: int = SAMPLE_CANDIDATES,
    margin_sample: int | None = None,
    cluster_sample: int | None = None,
) -> SampledQuery:
    """Draw ``n_instances`` rows from a proposal built on ``strategy``'s order, recording each pick's ``q``.

    The strategy ranks ``candidates * n_instances`` rows (:func:`query`); the proposal is
    :func:`rank_proposal` over that order (stochastic batch acquisition, Kirsch et al. 2023), so the batch
    mostly follows the strategy while every row keeps a known, positive chance. ``random`` is a uniform draw.
    ``margin_sample`` and ``cluster_sample`` go to :func:`query`.
    """
    rng = check_random_state(random_state)
    X_pool = np.asarray(X_pool)
    n_instances = min(int(n_instances), len(X_pool))
    if n_instances <= 0:
        return SampledQuery(np.zeros(0, dtype=np.int64), np.zeros(0), strategy)
    if strategy == "random":
        ranked = np.zeros(0, dtype=np.int64)
        epsilon = 1.0
    else:
        wanted = min(len(X_pool), max(1, candidates) * n_instances)
        ranked = query(estimator, X_pool, wanted, strategy, random_state=rng, X_labelled=X_labelled,
                       n_classes=n_classes, switch_per_class=switch_per_class, margin_sample=margin_sample,
                       cluster_sample=cluster_sample).indices
    indices, q = draw_sequential(rank_proposal(len(X_pool), ranked, power, epsilon), n_instances, rng)
    return SampledQuery(indices, q, strategy)
