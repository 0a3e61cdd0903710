"""SemiSupervisedHead: scikit-learn's checks, and on small synthetic clusters that the pool helps."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.exceptions import NotFittedError
from sklearn.utils.estimator_checks import parametrize_with_checks

from learner.head import SoftmaxHead
from learner.semi import SemiSupervisedHead, unlabelled_mask


# With no -1 in y the head is its softmax head on the labelled rows, and every check passes but one:
# check_classifiers_classes uses -1 as a class label, which is the unlabelled marker here (as for
# scikit-learn's own LabelSpreading and SelfTrainingClassifier).
EXPECTED_FAILED = {"check_classifiers_classes": "-1 marks an unlabelled row, so it cannot be a class label"}


@parametrize_with_checks([SemiSupervisedHead(random_state=0)],
                         expected_failed_checks=lambda estimator: EXPECTED_FAILED)
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)


def _clusters(n_per_class=200, n_classes=4, dim=32, spread=1.6, seed=0):
    """Non-negative embeddings (like pooled CNN features) in elongated clusters."""
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((n_classes, dim)) * 2
    y = np.repeat(np.arange(n_classes), n_per_class)
    X = centers[y] + rng.standard_normal((len(y), dim)) * spread
    return np.abs(X).astype(np.float32), y


def _one_per_class(y, rng):
    return np.array([rng.choice(np.flatnonzero(y == c)) for c in np.unique(y)])


def test_unlabelled_pool_beats_labels_alone_at_one_label_per_class():
    gains = []
    for seed in range(8):
        X, y = _clusters(seed=seed)
        test = np.arange(len(y)) % 5 == 0
        X_train, y_train, X_test, y_test = X[~test], y[~test], X[test], y[test]
        picks = _one_per_class(y_train, np.random.default_rng(seed))
        semi_y = np.full(len(y_train), -1)
        semi_y[picks] = y_train[picks]
        semi = SemiSupervisedHead(random_state=0).fit(X_train, semi_y)
        plain = SoftmaxHead(random_state=0).fit(X_train[picks], y_train[picks])
        gains.append((semi.predict(X_test) == y_test).mean() - (plain.predict(X_test) == y_test).mean())
    assert np.mean(gains) > 0.05


def test_with_many_labels_per_class_the_pool_is_left_out_and_the_fit_is_the_plain_heads():
    X, y = _clusters(n_per_class=150)
    labelled = np.arange(len(y)) % 3 != 0  # 100 labels per class: the pool's weight would be (8/100)^3
    y_fit = np.where(labelled, y, -1)
    semi = SemiSupervisedHead(random_state=0)
    assert semi.unlabelled_weight(int(labelled.sum()), 4) == 0
    assert semi.unlabelled_weight(4, 4) > 1  # one label per class: the pool has the say
    semi.fit(X, y_fit)
    plain = SoftmaxHead(random_state=0).fit(X[labelled], y[labelled])
    assert semi.n_unlabelled_ == 0 and semi.unlabelled_weight_ == 0
    np.testing.assert_allclose(semi.predict_proba(X), plain.predict_proba(X), atol=1e-5)


def test_string_labels_with_unlabelled_rows_and_inductive_predict():
    X, y = _clusters(n_classes=3)
    names = np.array(["bag", "coat", "shirt"], dtype=object)[y]
    y_fit = names.copy()
    y_fit[np.arange(len(y)) % 10 != 0] = -1
    head = SemiSupervisedHead(random_state=0, max_unlabelled=100).fit(X, y_fit)
    assert list(head.classes_) == ["bag", "coat", "shirt"]
    assert head.n_unlabelled_ == 100  # the pool is sampled above max_unlabelled
    fresh, _ = _clusters(n_classes=3, seed=0, n_per_class=5)  # rows the fit never saw
    proba = head.predict_proba(fresh)
    assert proba.shape == (len(fresh), 3)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-5)


def test_only_unlabelled_rows_is_an_error():
    X, _ = _clusters()
    with pytest.raises(ValueError, match="no labelled row"):
        SemiSupervisedHead().fit(X, np.full(len(X), -1))


def test_not_fitted_raises():
    X, _ = _clusters()
    with pytest.raises(NotFittedError):
        SemiSupervisedHead().predict_proba(X)


def test_warm_start_reuses_the_softmax_head():
    X, y = _clusters()
    y_fit = np.where(np.arange(len(y)) % 20 == 0, y, -1)
    head = SemiSupervisedHead(random_state=0, warm_start=True).fit(X, y_fit)
    inner = head.head_
    head.set_params(max_iter=1)
    head.fit(X, y_fit)
    assert head.head_ is inner and inner.max_iter == 1
    assert (head.predict(X) == y).mean() > 0.8  # one step from the previous optimum keeps it


def test_whitening_is_skipped_on_small_pools():
    X, y = _clusters(n_per_class=20, n_classes=3)
    y_fit = np.where(np.arange(len(y)) % 20 == 0, y, -1)
    whitened = SemiSupervisedHead(random_state=0, whiten_dims=64).fit(X, y_fit)
    plain = SemiSupervisedHead(random_state=0, whiten_dims=0).fit(X, y_fit)
    np.testing.assert_allclose(whitened.head_.coef_, plain.head_.coef_)  # 60 rows < 15 x 64: no whitening


def test_whitening_waits_for_two_labels_per_class():
    X, y = _clusters(n_per_class=100)  # 400 rows >= 15 x 8: the pool is large enough to whiten 8 dimensions
    for per_class, same in ((1, True), (3, False)):
        y_fit = np.full(len(y), -1)
        for c in range(4):
            y_fit[np.flatnonzero(y == c)[:per_class]] = c
        whitened = SemiSupervisedHead(random_state=0, whiten_dims=8, whitened_temperature=0.05).fit(X, y_fit)
        plain = SemiSupervisedHead(random_state=0, whiten_dims=0).fit(X, y_fit)
        assert np.allclose(whitened.head_.coef_, plain.head_.coef_) == same, per_class


def test_unlabelled_mask():
    assert unlabelled_mask(np.array([1, -1, 2])).tolist() == [False, True, False]
    assert unlabelled_mask(np.array(["a", -1, "b"], dtype=object)).tolist() == [False, True, False]
    assert unlabelled_mask(np.array(["a", "b"])).tolist() == [False, False]


def test_serving_proba_gives_predict_probas_numbers_exactly():
    X, y = _clusters(n_per_class=40)
    rng = np.random.default_rng(1)
    y_fit = y.copy()
    y_fit[rng.random(len(y)) < 0.7] = -1  # most rows unlabelled
    head = SemiSupervisedHead(random_state=0).fit(X, y_fit)
    fast = head.serving_proba()
    for rows in (X[:1], X[:9]):
        assert np.array_equal(fast(rows), head.predict_proba(rows))
    with pytest.raises(NotFittedError):
        SemiSupervisedHead().serving_proba()
