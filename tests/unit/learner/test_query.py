"""Query strategies: modAL's functions called on our own estimator."""

from __future__ import annotations

import sys

import numpy as np
import pytest
from sklearn.base import BaseEstimator, ClassifierMixin

from learner.head import SoftmaxHead
from learner.query import STRATEGIES, query


class FixedProba(ClassifierMixin, BaseEstimator):
    """A fitted classifier whose probabilities are given (our seam: anything with predict_proba)."""

    def __init__(self, proba):
        self.proba = proba
        self.classes_ = np.arange(np.shape(proba)[1])  # "fitted" from the start

    def fit(self, X, y):
        return self

    def predict_proba(self, X):
        return np.asarray(self.proba)[np.asarray(X, dtype=int).ravel()]


POOL = np.arange(5).reshape(-1, 1)  # row i's probabilities are PROBA[i]
PROBA = [
    [0.98, 0.01, 0.01],  # sure
    [0.50, 0.49, 0.01],  # two-way tie: smallest margin
    [0.34, 0.33, 0.33],  # no idea: least confident, most entropy
    [0.70, 0.20, 0.10],
    [0.60, 0.20, 0.20],
]


@pytest.mark.parametrize(
    "strategy, first_two",
    [("least_confidence", [2, 1]), ("margin", [1, 2]), ("entropy", [2, 4])],
)
def test_strategies_pick_the_most_informative_first(strategy, first_two):
    chosen = query(FixedProba(PROBA), POOL, n_instances=2, strategy=strategy)
    assert chosen.indices.tolist() == first_two
    assert chosen.strategy == strategy


def test_scores_are_ordered_and_match_the_measure():
    chosen = query(FixedProba(PROBA), POOL, n_instances=5, strategy="least_confidence")
    np.testing.assert_allclose(chosen.scores, [0.66, 0.5, 0.4, 0.3, 0.02])
    assert sorted(chosen.indices.tolist()) == [0, 1, 2, 3, 4]


def test_random_is_seeded_and_without_replacement():
    first = query(FixedProba(PROBA), POOL, n_instances=4, strategy="random", random_state=3)
    again = query(FixedProba(PROBA), POOL, n_instances=4, strategy="random", random_state=3)
    assert first.indices.tolist() == again.indices.tolist()
    assert len(set(first.indices.tolist())) == 4
    assert np.isnan(first.scores).all()


def test_unfitted_estimator_falls_back_to_seeded_random():
    rng = np.random.default_rng(0)
    pool = rng.standard_normal((50, 4))
    first = query(SoftmaxHead(), pool, n_instances=5, strategy="margin", random_state=1)
    again = query(SoftmaxHead(), pool, n_instances=5, strategy="margin", random_state=1)
    assert first.indices.tolist() == again.indices.tolist()
    assert len(set(first.indices.tolist())) == 5


def test_works_with_our_head_end_to_end():
    rng = np.random.default_rng(0)
    X = np.vstack([rng.normal(-3, 1, (20, 4)), rng.normal(3, 1, (20, 4))])
    y = np.repeat([0, 1], 20)
    head = SoftmaxHead(random_state=0).fit(X, y)
    pool = np.vstack([np.full((1, 4), -3.0), np.zeros((1, 4)), np.full((1, 4), 3.0)])
    for strategy in ("least_confidence", "margin", "entropy"):
        assert query(head, pool, 1, strategy).indices.tolist() == [1]  # the point between the classes


def test_more_than_the_pool_returns_the_pool_and_zero_returns_nothing():
    assert len(query(FixedProba(PROBA), POOL, 99, "entropy").indices) == 5
    assert len(query(FixedProba(PROBA), POOL, 0, "entropy").indices) == 0


def test_unknown_strategy():
    with pytest.raises(ValueError, match="choose one of"):
        query(FixedProba(PROBA), POOL, 1, "vibes")
    assert "random" in STRATEGIES


def test_never_imports_torch():
    assert "modAL.dropout" not in sys.modules
    assert "torch" not in sys.modules
