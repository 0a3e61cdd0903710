"""The importance-weighted accuracy estimate (LURE) and the sampled picks it needs."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from learner.estimate import lure_weights, oof_weighted_accuracy, weighted_accuracy
from learner.query import SampledQuery, draw_sequential, rank_proposal, sampled_query


def biased_pool(n_pool: int = 300, accuracy: float = 0.8, seed: int = 0):
    """A pool's correctness and a proposal that prefers the wrong rows (as an uncertainty strategy does)."""
    rng = np.random.default_rng(seed)
    correct = rng.random(n_pool) < accuracy
    preference = np.where(correct, 1.0, 6.0) * rng.uniform(0.5, 1.5, n_pool)
    return correct, preference / preference.sum()


def test_a_uniform_draw_has_every_weight_one():
    n_pool = 50
    q = 1.0 / (n_pool - np.arange(20))  # the m-th uniform pick among the rows left
    assert np.allclose(lure_weights(q, n_pool), 1.0)


def test_the_last_row_of_an_exhausted_pool_weighs_one():
    weights = lure_weights(np.array([0.5, 1.0]), n_pool=2)
    assert np.all(np.isfinite(weights)) and weights[-1] == pytest.approx(1.0)


def test_weights_refuse_a_pick_the_proposal_could_not_draw():
    with pytest.raises(ValueError, match="probability"):
        lure_weights(np.array([0.0, 0.2]), n_pool=10)
    with pytest.raises(ValueError, match="pool of 1"):
        lure_weights(np.array([0.5, 0.5]), n_pool=1)


def test_the_naive_mean_of_preferred_picks_is_biased_and_the_weighted_one_is_not():
    correct, proposal = biased_pool()
    truth = correct.mean()
    rng = np.random.RandomState(1)
    naive, weighted, covered = [], [], 0
    for _ in range(3000):
        rows, q = draw_sequential(proposal, 40, rng)
        estimate = weighted_accuracy(correct[rows], q, len(correct))
        naive.append(estimate.naive_accuracy)
        weighted.append(estimate.accuracy)
        covered += estimate.low <= truth <= estimate.high
    assert np.mean(naive) < truth - 0.15  # the preferred rows are mostly the wrong ones
    assert abs(np.mean(weighted) - truth) < 0.01
    assert covered / 3000 > 0.85


def test_an_adaptive_proposal_stays_unbiased():
    """A proposal recomputed between batches (as the loop does after every retrain) keeps the estimate unbiased."""
    correct, _ = biased_pool(seed=2)
    truth = correct.mean()
    rng = np.random.RandomState(3)
    estimates = []
    for _ in range(2000):
        left = np.ones(len(correct), dtype=bool)
        rows, qs = [], []
        for batch in range(4):
            preference = np.where(correct, 1.0, 2.0 + batch) * left  # sharper each round
            candidates = np.flatnonzero(left)
            drawn, q = draw_sequential(preference[candidates] / preference[candidates].sum(), 10, rng)
            rows.extend(candidates[drawn])
            qs.extend(q)
            left[candidates[drawn]] = False
        estimates.append(weighted_accuracy(correct[rows], qs, len(correct)).accuracy)
    assert abs(np.mean(estimates) - truth) < 0.01


def test_rank_proposal_sums_to_one_and_reaches_every_row():
    proposal = rank_proposal(100, np.array([7, 3, 50]), power=1.0, epsilon=0.1)
    assert proposal.sum() == pytest.approx(1.0)
    assert np.all(proposal > 0)
    assert proposal[7] > proposal[3] > proposal[50] > proposal[0]
    with pytest.raises(ValueError, match="epsilon"):
        rank_proposal(10, np.array([1]), epsilon=0.0)


def test_recorded_q_matches_the_draw_frequencies():
    proposal = rank_proposal(6, np.array([2, 4, 0]), power=1.0, epsilon=0.3)
    rng = np.random.RandomState(0)
    firsts, seconds = np.zeros(6), {}
    for _ in range(20000):
        rows, q = draw_sequential(proposal, 2, rng)
        firsts[rows[0]] += 1
        assert q[0] == pytest.approx(proposal[rows[0]])
        assert q[1] == pytest.approx(proposal[rows[1]] / (1 - proposal[rows[0]]))
        seconds.setdefault(rows[0], []).append(rows[1])
    assert np.allclose(firsts / 20000, proposal, atol=0.01)
    after_two = np.bincount(seconds[2], minlength=6) / len(seconds[2])
    expected = proposal.copy()
    expected[2] = 0
    assert np.allclose(after_two, expected / expected.sum(), atol=0.02)


def test_sampled_query_draws_distinct_rows_mostly_from_the_strategy_order():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, 8)).astype(np.float32)
    y = (X[:, 0] > 0).astype(int)
    head = LogisticRegression().fit(X[:40], y[:40])
    picked = sampled_query(head, X, 10, "margin", random_state=0)
    assert isinstance(picked, SampledQuery)
    assert len(set(picked.indices.tolist())) == 10
    assert np.all((picked.q > 0) & (picked.q <= 1))
    uniform = sampled_query(None, X, 10, "random", random_state=0)
    assert np.allclose(uniform.q, 1.0 / (300 - np.arange(10)))
    margins = np.abs(head.predict_proba(X)[:, 1] - 0.5)
    assert np.median(margins[picked.indices]) < np.median(margins)  # it still follows margin sampling


def test_the_out_of_fold_estimate_is_near_the_truth_on_uniform_picks():
    rng = np.random.default_rng(4)
    X = rng.normal(size=(2000, 5))
    y = (X[:, 0] + 0.7 * rng.normal(size=2000) > 0).astype(int)
    rows = rng.permutation(2000)[:300]
    q = 1.0 / (2000 - np.arange(300))
    estimate = oof_weighted_accuracy(LogisticRegression, X[rows], y[rows], q, 2000, n_classes=2)
    truth = np.mean(LogisticRegression().fit(X[rows], y[rows]).predict(X) == y)
    assert estimate.low <= truth <= estimate.high
    assert estimate.to_dict()["n_labels"] == 300


def test_the_offline_loop_can_sample_its_batches():
    from learner.head import SoftmaxHead
    from learner.offline import run_offline

    rng = np.random.default_rng(0)
    centers = rng.standard_normal((4, 12)) * 3
    y = np.repeat(np.arange(4), 50)
    X = np.abs(centers[y] + rng.standard_normal((len(y), 12))).astype(np.float32)
    arms = {}
    for sampled in (False, True):
        result = run_offline(X, y, lambda seed: SoftmaxHead(random_state=seed), strategies=["margin"], seeds=[0, 1],
                             start_per_class=1, n_labels=24, batch=5, semi_supervised=False, sampled=sampled,
                             sample_params={"epsilon": 0.2})
        arms[sampled] = result.to_dict()
    assert arms[True]["settings"]["sampled"] == {"epsilon": 0.2} and "sampled" not in arms[False]["settings"]
    assert arms[True]["strategies"]["margin"]["n_labels"] == arms[False]["strategies"]["margin"]["n_labels"]
    # The same seeds, another pick rule: the curves differ; random is the same draw in both.
    assert arms[True]["strategies"]["margin"] != arms[False]["strategies"]["margin"]
    assert arms[True]["strategies"]["random"] == arms[False]["strategies"]["random"]


def test_out_of_fold_correctness_works_with_fewer_labels_a_class_than_folds():
    from learner.estimate import oof_correct

    rng = np.random.default_rng(5)
    y = np.array([0, 0, 0, 1, 1, 1, 2, 2, 3, 3])
    X = rng.normal(size=(len(y), 4)) + y[:, None] * 3
    assert oof_correct(LogisticRegression, X, y, n_classes=4).mean() > 0.5
    assert not oof_correct(LogisticRegression, X[[0, 3, 6]], y[[0, 3, 6]], n_classes=4).any()
