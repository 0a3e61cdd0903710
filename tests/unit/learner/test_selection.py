"""Cold-start picks and auto on small synthetic clusters, where the right answer is known."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from learner.head import SoftmaxHead
from learner.offline import run_offline
from learner.query import query
from learner.selection import coverage_picks, coverage_radius, diverse_margin_picks, typical_picks, unit_rows


def _clusters(n_classes=6, n_per_class=80, dim=24, spread=0.6, seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((n_classes, dim)) * 3
    y = np.repeat(np.arange(n_classes), n_per_class)
    X = np.abs(centers[y] + rng.standard_normal((len(y), dim)) * spread).astype(np.float32)
    return X, y


@pytest.mark.parametrize("seed", range(5))
def test_typical_picks_land_in_every_cluster(seed):
    X, y = _clusters(seed=seed)
    picks = typical_picks(X, 6, random_state=seed)
    assert sorted(y[picks].tolist()) == list(range(6))


def test_typical_picks_skip_clusters_that_already_have_a_label():
    X, y = _clusters()
    labelled = np.flatnonzero(y < 3)[::40]  # two labels in each of clusters 0-2
    pool = np.setdiff1d(np.arange(len(y)), labelled)
    picks = typical_picks(X[pool], 3, X_labelled=X[labelled], random_state=0)
    assert sorted(y[pool][picks].tolist()) == [3, 4, 5]


@pytest.mark.parametrize("seed", range(3))
def test_coverage_picks_spread_over_the_clusters(seed):
    X, y = _clusters(seed=seed)
    picks = coverage_picks(X, 6, random_state=seed)
    assert len(set(picks.tolist())) == 6
    # Balls sized for 4x the picks cover part of a cluster each, so two picks can share one (ProbCover
    # maximises coverage, not clusters hit): most clusters, not necessarily all.
    assert len(set(y[picks].tolist())) >= 5


def test_coverage_radius_is_chosen_from_the_data():
    X, _ = _clusters()
    Z = unit_rows(X)
    rng = np.random.RandomState(0)
    # More balls: smaller ones; the scale of the embeddings does not matter after normalisation.
    assert coverage_radius(Z, 60, rng) < coverage_radius(Z, 6, rng)
    assert coverage_radius(unit_rows(X * 100), 6, np.random.RandomState(0)) == pytest.approx(
        coverage_radius(Z, 6, np.random.RandomState(0)), rel=1e-4)


def test_diverse_margin_picks_the_least_sure_spread_over_clusters():
    X, y = _clusters(n_classes=4, n_per_class=50)
    proba = np.full((len(y), 2), 0.5)
    proba[:, 0] = np.linspace(0.5, 1.0, len(y))  # margin grows with the row number
    proba[:, 1] = 1 - proba[:, 0]
    picks, margins = diverse_margin_picks(proba, X, 4, candidates_per_pick=50, random_state=0)
    assert len(set(y[picks].tolist())) == 4 and np.all(np.diff(margins) >= 0)


def test_auto_and_typical_work_with_no_model_and_no_labels():
    X, y = _clusters()
    for strategy in ("auto", "typical", "coverage"):
        chosen = query(SoftmaxHead(), X, 6, strategy, random_state=0)
        assert len(set(y[chosen.indices].tolist())) >= 5, strategy


def test_auto_seeks_a_class_with_no_label_yet():
    X, y = _clusters()
    labelled = np.concatenate([np.flatnonzero(y == c)[:10] for c in range(5)])  # class 5 never labelled
    pool = np.setdiff1d(np.arange(len(y)), labelled)
    head = SoftmaxHead(random_state=0).fit(X[labelled], y[labelled])
    chosen = query(head, X[pool], 4, "auto", random_state=0, X_labelled=X[labelled], n_classes=6)
    assert 5 in y[pool][chosen.indices]


def test_offline_auto_never_trails_random_by_more_than_noise():
    X, y = _clusters(n_classes=5, n_per_class=60, spread=1.2)
    result = run_offline(X, y, lambda seed: SoftmaxHead(random_state=seed), strategies=["auto", "random"],
                         seeds=range(4), start_per_class=0, n_labels=30, batch=5, semi_supervised=False)
    document = result.to_dict()
    auto, random = (np.asarray(document["strategies"][s]["accuracy_mean"]) for s in ("auto", "random"))
    assert document["strategies"]["auto"]["n_labels"] == [5, 10, 15, 20, 25, 30]
    assert np.all(auto >= random - 0.03)
    assert auto[0] > random[0]  # five typical picks find all five classes; five random ones do not
    assert set(document) >= {"strategies", "full_data_accuracy", "seeds"}
    assert set(document["strategies"]["auto"]["labels_to_reach"]) == {"0.85", "0.98_of_full"}


def test_offline_logs_one_line_per_seed(caplog):
    X, y = _clusters(n_classes=3, n_per_class=20)
    with caplog.at_level(logging.INFO, logger="learner.offline"):
        run_offline(X, y, lambda seed: SoftmaxHead(random_state=seed), strategies=["auto"], seeds=[7, 8],
                    start_per_class=1, n_labels=9, batch=3, semi_supervised=False)
    lines = [r.getMessage() for r in caplog.records if r.name == "learner.offline" and r.levelno == logging.INFO]
    assert len(lines) == 2
    assert lines[0].startswith("seed 7 (1 of 2) at 9 labels: auto ") and "random " in lines[0]
    assert lines[1].startswith("seed 8 (2 of 2)") and "all labels" in lines[1]
