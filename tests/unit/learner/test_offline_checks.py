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


def test_clean_learning_leaves_the_unsettled_suspects_out_of_the_fit_and_they_are_mostly_the_wrong_labels(clusters):
    noisy = run(clusters, Annotators(0.2))
    clean = run(clusters, Annotators(0.2, checks=True, leave_out=1.0))
    assert clean.n_labels == noisy.n_labels  # leaving a label out of a fit costs no budget
    late = [record for seed_rounds in clean.rounds for record in seed_rounds if record["n_labels"] >= 60]
    left_out = sum(r["n_left_out"] for r in late)
    assert left_out > 0
    assert sum(r["left_out_wrong"] for r in late) / left_out >= 0.6  # 20% of the labels are wrong
    assert all(r["n_left_out"] <= r["n_items"] for r in late)
    # without leave_out every label trains
    plain = run(clusters, Annotators(0.2, checks=True))
    assert all(r["n_left_out"] == 0 for seed_rounds in plain.rounds for r in seed_rounds)


def test_leave_out_takes_the_most_suspect_share_of_the_suspects_not_looked_at_twice():
    from learner.offline import _Answers, _left_out

    labelled = np.array([10, 11, 12, 13, 14])
    answers = _Answers(20)
    answers.give(labelled, 0, np.array([0, 1, 2, 3, 0]))
    answers.give(np.array([12]), 1, np.array([2]))  # row 2 was looked at twice: settled
    suspects = np.array([2, 4, 0, 1])  # most suspect first
    assert _left_out(suspects, labelled, answers, 1.0).tolist() == [4, 0, 1]
    assert _left_out(suspects, labelled, answers, 0.5).tolist() == [4, 0]  # ceil(1.5)
    assert _left_out(suspects, labelled, answers, 0.0).tolist() == []


def test_self_confidence_ranking_spends_the_same_budget_and_leaves_fewer_wrong_labels(clusters):
    noisy = run(clusters, Annotators(0.2))
    checked = run(clusters, Annotators(0.2, checks=True, max_second_look_share=0.5, rank="self_confidence"))
    assert checked.n_labels == noisy.n_labels
    wrong_share = lambda curve: np.mean([r[-1]["train_wrong"] / r[-1]["n_items"] for r in curve.rounds])
    assert wrong_share(checked) < wrong_share(noisy) - 0.05
    # the second looks went mostly to the labels that were wrong (20% of all labels are)
    splits = [r["split"] for seed_rounds in checked.rounds for r in seed_rounds if "split" in r]
    looks = sum(s["second_looks"] for s in splits)
    assert looks > 0 and sum(s["second_looks_at_wrong_labels"] for s in splits) / looks >= 0.5


def test_bad_check_settings_are_refused():
    with pytest.raises(ValueError, match="rank"):
        Annotators(0.1, checks=True, rank="loudest")
    with pytest.raises(ValueError, match="leave_out"):
        Annotators(0.1, checks=True, leave_out=1.5)
    with pytest.raises(ValueError, match="max_self_confidence"):
        Annotators(0.1, checks=True, max_self_confidence=-0.1)
    with pytest.raises(ValueError, match="min_top_confidence"):
        Annotators(0.1, checks=True, min_top_confidence=2.0)


def test_a_self_confidence_ceiling_spends_fewer_second_looks_and_they_hit_wrong_labels(clusters):
    every = run(clusters, Annotators(0.2, checks=True, max_second_look_share=0.5, max_self_confidence=1.0))
    sure = run(clusters, Annotators(0.2, checks=True, max_second_look_share=0.5, max_self_confidence=0.05))
    splits = lambda curve: [r["split"] for seed_rounds in curve.rounds for r in seed_rounds if "split" in r]
    looks = lambda curve: sum(s["second_looks"] for s in splits(curve))
    hits = lambda curve: sum(s["second_looks_at_wrong_labels"] for s in splits(curve))
    assert sure.n_labels == every.n_labels  # the same budget: a look not spent goes to a new item
    assert 0 < looks(sure) <= looks(every)
    assert hits(sure) / looks(sure) >= hits(every) / looks(every)
    assert hits(sure) / looks(sure) >= 0.8  # a label the model finds under 5% likely is mostly wrong here


def test_second_looks_wait_until_the_labels_reach_looks_from_per_class(clusters):
    checked = run(clusters, Annotators(0.2, checks=True, max_second_look_share=0.5, looks_from_per_class=15))
    for seed_rounds in checked.rounds:
        splits = [(r["n_labels"], r["split"]["second_looks"]) for r in seed_rounds if "split" in r]
        assert splits and all(spent >= 60 for spent, _ in splits)  # no split before 4 classes x 15 labels
        assert sum(looks for _, looks in splits) > 0
    with pytest.raises(ValueError, match="looks_from_per_class"):
        Annotators(0.2, checks=True, looks_from_per_class=-1)


def test_the_oracle_bound_looks_again_only_at_labels_that_are_wrong(clusters):
    oracle = run(clusters, Annotators(0.2, checks=True, rank="oracle"))
    splits = [r["split"] for seed_rounds in oracle.rounds for r in seed_rounds if "split" in r]
    assert sum(s["second_looks"] for s in splits) > 0
    assert all(s["second_looks_at_wrong_labels"] == s["second_looks"] for s in splits)
