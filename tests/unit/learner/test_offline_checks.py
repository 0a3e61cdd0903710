"""The offline loop with noisy annotators and label checks, on well-separated synthetic classes."""

import warnings

import numpy as np
import pytest

from learner.head import SoftmaxHead
from learner.offline import Annotators, run_offline


@pytest.fixture(scope="module")
def clusters():
    rng = np.random.default_rng(0)
    centres = rng.normal(0, 1, (4, 16)) * 3.0
    y = rng.integers(0, 4, 1200)
    return (centres[y] + rng.normal(0, 1, (1200, 16))).astype(np.float32), y.astype(np.int64)


def run(clusters, annotators, n_labels=120):
    X, y = clusters
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return run_offline(X, y, lambda seed: SoftmaxHead(random_state=seed), strategies=["least_confidence"],
                           seeds=[0, 1], n_labels=n_labels, batch=10, semi_supervised=False, annotators=annotators,
                           with_random=False).strategies["least_confidence"]


def test_perfect_annotators_keep_the_loop_as_it_was(clusters):
    curve = run(clusters, Annotators())
    assert curve.rounds == []  # nothing to check
    assert curve.n_labels[-1] == 120 and min(a[-1] for a in curve.accuracies) > 0.95


def test_the_suspects_find_the_injected_errors(clusters):
    curve = run(clusters, Annotators(0.2))
    last = [seed_rounds[-1] for seed_rounds in curve.rounds]
    for record in last:
        assert record["n_wrong"] == record["train_wrong"] > 10  # 20% of 120, nothing corrected without checks
        assert record["suspect_recall"] >= 0.7 and record["suspect_precision"] >= 0.6
        assert record["reported_accuracy"] < record["accuracy"] - 0.1  # the noisy holdout under-reports


def test_checks_spend_the_same_budget_and_leave_fewer_wrong_labels(clusters):
    noisy = run(clusters, Annotators(0.2))
    checked = run(clusters, Annotators(0.2, checks=True, max_second_look_share=0.5))
    assert checked.n_labels == noisy.n_labels  # labels spent per round: a second look costs one
    looks = [r[-1]["n_labels"] - r[-1]["n_items"] for r in checked.rounds]
    assert all(n > 0 for n in looks)
    wrong_share = lambda curve: np.mean([r[-1]["train_wrong"] / r[-1]["n_items"] for r in curve.rounds])
    assert wrong_share(checked) < wrong_share(noisy) - 0.05
    # the holdout check asked suspected holdout labels again and the reported accuracy moved towards the truth
    for noisy_rounds, checked_rounds in zip(noisy.rounds, checked.rounds):
        assert checked_rounds[-1]["holdout_rechecked"] > 0
        assert checked_rounds[-1]["holdout_wrong"] < noisy_rounds[-1]["holdout_wrong"]
