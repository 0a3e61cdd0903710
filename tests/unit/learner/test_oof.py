"""Out-of-fold probabilities: no row is scored by a head that saw it."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.base import BaseEstimator, ClassifierMixin

from learner.oof import fold_assignment, out_of_fold_proba


class Memorizer(ClassifierMixin, BaseEstimator):
    """Predicts a training row's own label with certainty, anything else uniformly: a leak shows at once."""

    def fit(self, X, y):
        keep = np.asarray(y) >= 0
        self.rows_ = {tuple(r): int(c) for r, c in zip(np.asarray(X)[keep], np.asarray(y)[keep])}
        self.classes_ = np.unique(np.asarray(y)[keep])
        return self

    def predict_proba(self, X):
        out = np.full((len(X), len(self.classes_)), 1.0 / len(self.classes_))
        for i, r in enumerate(np.asarray(X)):
            if tuple(r) in self.rows_:
                out[i] = np.eye(len(self.classes_))[list(self.classes_).index(self.rows_[tuple(r)])]
        return out


def test_no_row_is_scored_by_a_head_that_saw_it():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(40, 3))
    y = np.repeat(np.arange(4), 10)
    proba = out_of_fold_proba(Memorizer, X, y, n_classes=4, folds=5, seed=1)
    assert proba.shape == (40, 4)
    np.testing.assert_allclose(proba, 0.25)  # a memoriser that never saw the row knows nothing of it
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)


def test_folds_are_stratified_and_seeded():
    y = np.repeat(np.arange(3), [10, 10, 2])
    a, b = fold_assignment(y, 5, seed=3), fold_assignment(y, 5, seed=3)
    np.testing.assert_array_equal(a, b)
    for c in range(2):
        assert sorted(np.bincount(a[y == c], minlength=5)) == [2] * 5
    assert len(set(a[y == 2])) == 2  # a rare class is spread over as many folds as it has rows


def test_a_class_missing_from_a_fold_gets_a_zero_column():
    X = np.arange(22, dtype=float).reshape(11, 2)
    y = np.array([0] * 5 + [1] * 5 + [2])
    proba = out_of_fold_proba(Memorizer, X, y, n_classes=3, folds=5, seed=0)
    assert proba[-1, 2] == 0.0  # the only row of class 2 was scored by a head that never saw class 2


def test_unlabelled_rows_reach_every_fit_and_are_never_scored():
    seen = []

    class Spy(Memorizer):
        def fit(self, X, y):
            seen.append(int((np.asarray(y) == -1).sum()))
            return super().fit(X, y)

    X = np.random.default_rng(0).normal(size=(10, 2))
    proba = out_of_fold_proba(Spy, X, np.array([0, 1] * 5), 2, folds=2, X_unlabelled=np.zeros((7, 2)))
    assert seen == [7, 7] and proba.shape == (10, 2)


def test_bad_labels_are_refused():
    with pytest.raises(ValueError, match="class indices"):
        out_of_fold_proba(Memorizer, np.zeros((4, 2)), np.array([0, 1, 2, 5]), 3)


def test_every_class_rarer_than_the_folds():
    X = np.arange(12, dtype=float).reshape(6, 2)
    y = np.array([0, 0, 1, 1, 2, 2])  # two labels a class, five folds asked for: two folds
    assert set(fold_assignment(y, 5, seed=0)) == {0, 1}
    assert out_of_fold_proba(Memorizer, X, y, n_classes=3, folds=5).shape == (6, 3)
    singletons = out_of_fold_proba(Memorizer, X[:3], np.array([0, 1, 2]), n_classes=3, folds=5)
    assert (singletons[np.arange(3), [0, 1, 2]] == 0).all()  # one label a class: none vouches for itself
