"""SoftmaxHead as a scikit-learn estimator, on small random embeddings (no backbone)."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.exceptions import NotFittedError
from sklearn.utils.estimator_checks import parametrize_with_checks

from learner.head import SoftmaxHead

# Every check of scikit-learn's suite applies and passes: none is listed as an expected failure. (The one
# skip is the array-API check, which scikit-learn itself skips unless SCIPY_ARRAY_API is set.)
@parametrize_with_checks([SoftmaxHead(random_state=0)])
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)


def _blobs(n_per_class: int = 30, n_classes: int = 3, dim: int = 16, seed: int = 0, labels=None):
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((n_classes, dim)) * 3
    y_index = np.repeat(np.arange(n_classes), n_per_class)
    X = (centers[y_index] + rng.standard_normal((len(y_index), dim))).astype(np.float32)
    names = np.asarray(labels if labels is not None else np.arange(n_classes))
    return X, names[y_index]


def test_learns_separable_classes_with_string_labels():
    X, y = _blobs(labels=["coat", "bag", "shirt"])
    head = SoftmaxHead(random_state=0).fit(X, y)
    assert list(head.classes_) == ["bag", "coat", "shirt"]
    assert (head.predict(X) == y).mean() > 0.95
    proba = head.predict_proba(X)
    assert proba.shape == (len(X), 3)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-5)
    # columns follow classes_: the column of each row's predicted class is its largest
    assert np.array_equal(head.classes_[proba.argmax(axis=1)], head.predict(X))


def test_same_random_state_gives_the_same_weights():
    # To a tolerance, not bit for bit: reductions on a GPU are not deterministic in their last bits.
    X, y = _blobs()
    first = SoftmaxHead(random_state=7, max_iter=50, tol=0).fit(X, y)
    second = SoftmaxHead(random_state=7, max_iter=50, tol=0).fit(X, y)
    np.testing.assert_allclose(first.coef_, second.coef_, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(first.intercept_, second.intercept_, rtol=1e-5, atol=1e-6)
    other = SoftmaxHead(random_state=8, max_iter=50, tol=0).fit(X, y)
    assert not np.allclose(first.coef_, other.coef_, rtol=1e-3, atol=1e-4)


def test_not_fitted_raises():
    X, _ = _blobs()
    with pytest.raises(NotFittedError):
        SoftmaxHead().predict_proba(X)
    with pytest.raises(NotFittedError):
        SoftmaxHead().predict(X)


def test_warm_start_continues_from_previous_weights():
    X, y = _blobs(n_per_class=60)
    first, both = np.arange(0, len(y), 2), np.arange(len(y))  # half the labels, then all of them
    warm = SoftmaxHead(random_state=0, warm_start=True).fit(X[first], y[first])
    optimum_on_half = warm.loss_
    warm.set_params(max_iter=1)
    warm.fit(X[first], y[first])
    # loss_ is measured before the step: a warm refit starts at the previous optimum
    assert warm.loss_ == pytest.approx(optimum_on_half, rel=0.05)
    cold_start = SoftmaxHead(random_state=0, max_iter=1).fit(X[first], y[first])
    assert cold_start.loss_ > 2 * warm.loss_
    # With few steps on more labels, continuing beats starting over.
    reference = SoftmaxHead(random_state=0, max_iter=600).fit(X[both], y[both]).loss_
    warm.set_params(max_iter=20)
    warm.fit(X[both], y[both])
    cold = SoftmaxHead(random_state=0, max_iter=20).fit(X[both], y[both])
    assert warm.loss_ - reference < cold.loss_ - reference


def test_warm_start_keeps_known_classes_and_adds_new_ones():
    X, y = _blobs(n_classes=3)
    head = SoftmaxHead(random_state=0, warm_start=True).fit(X[y < 2], y[y < 2])
    before = head.coef_.copy()
    assert list(head.classes_) == [0, 1]
    head.set_params(max_iter=1)
    head.fit(X, y)  # class 2 arrives
    assert list(head.classes_) == [0, 1, 2]
    # Rows of the known classes moved one small step from where they were; the new row starts fresh.
    assert np.abs(head.coef_[:2] - before).max() < 0.1
    head.set_params(max_iter=300)
    head.fit(X, y)
    assert (head.predict(X) == y).mean() > 0.95


def test_warm_start_refuses_a_different_embedding_width():
    X, y = _blobs(dim=16)
    head = SoftmaxHead(warm_start=True).fit(X, y)
    with pytest.raises(ValueError, match="features"):
        head.fit(np.hstack([X, X]), y)


def test_without_warm_start_a_refit_forgets():
    X, y = _blobs(n_classes=3)
    head = SoftmaxHead(random_state=0).fit(X, y)
    head.fit(X[y < 2], y[y < 2])
    assert list(head.classes_) == [0, 1]
    assert head.predict_proba(X).shape == (len(X), 2)


@pytest.mark.parametrize("params", [{"max_iter": 0}, {"alpha": -1.0}, {"learning_rate": 0.0}, {"power": 0.0}, {"warm_start_learning_rate": 0.0}])
def test_bad_parameters_are_refused_at_fit(params):
    X, y = _blobs()
    with pytest.raises(ValueError, match=next(iter(params))):
        SoftmaxHead(**params).fit(X, y)


def test_zero_rows_do_not_produce_nan():
    X, y = _blobs()
    X[0] = 0.0
    proba = SoftmaxHead(random_state=0).fit(X, y).predict_proba(X)
    assert np.all(np.isfinite(proba))


@pytest.mark.parametrize("power, normalize", [(1.0, True), (0.5, True), (1.0, False)])
def test_serving_proba_gives_predict_probas_numbers_exactly(power, normalize):
    X, y = _blobs(labels=["coat", "bag", "shirt"])
    head = SoftmaxHead(random_state=0, power=power, normalize=normalize).fit(X, y)
    fast = head.serving_proba()
    for rows in (X[:1], X[:7], X.astype(np.float64)[:3]):
        assert np.array_equal(fast(rows), head.predict_proba(rows))  # the same bits, not just close


def test_serving_proba_leaves_what_is_not_a_plain_finite_batch_to_predict_proba():
    X, y = _blobs()
    head = SoftmaxHead(random_state=0).fit(X, y)
    fast = head.serving_proba()
    assert np.array_equal(fast(X[:2].tolist()), head.predict_proba(X[:2]))  # a list: checked and converted
    bad = X[:2].copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        fast(bad)
    with pytest.raises(ValueError, match="features"):
        fast(X[:2, :5])
    with pytest.raises(NotFittedError):
        SoftmaxHead().serving_proba()
