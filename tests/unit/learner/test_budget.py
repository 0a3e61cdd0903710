"""The rule that splits a review batch between holdout top-ups, second looks and new items."""

import numpy as np
import pytest

from learner.budget import (
    DEFAULT_MAX_SELF_CONFIDENCE,
    DEFAULT_MIN_TOP_CONFIDENCE,
    DEFAULT_RANK,
    RANKS,
    Split,
    second_look_candidates,
    self_confidence,
    split_batch,
)


def total(split: Split) -> int:
    return split.new + split.n_second_looks + split.holdout


def test_holdout_comes_first_and_the_rest_splits_by_share_without_pool_scores():
    split = split_batch(10, 2, np.array([0.9, 0.1, 0.5, 0.3, 0.2, 0.7]), max_second_look_share=0.5)
    assert split.holdout == 2
    assert split.n_second_looks == 4  # half of the 8 left
    assert split.second_looks.tolist() == [1, 4, 3, 2]  # most suspect (lowest score) first
    assert split.new == 4
    default = split_batch(20, 0, np.array([0.9, 0.1, 0.5, 0.3, 0.2, 0.7]), np.zeros(50))
    assert default.second_looks.tolist() == [1, 4, 3, 2] and default.new == 16  # 20% of the batch, pool scores aside
    assert total(split) == 10


def test_activelab_scores_decide_where_the_remaining_labels_go():
    looks = np.array([0.05, 0.4, 0.8])
    pool = np.array([0.1, 0.2, 0.3, 0.9, 0.95])
    split = split_batch(4, 0, looks, pool, max_second_look_share=1.0, rule="activelab")
    # The four lowest of both lists: 0.05 (look), 0.1, 0.2, 0.3 (new).
    assert split.second_looks.tolist() == [0]
    assert split.new == 3


def test_second_looks_never_exceed_their_share_even_when_they_all_score_better():
    split = split_batch(10, 0, np.zeros(20), np.ones(100), max_second_look_share=0.3, rule="activelab")
    assert split.n_second_looks == 3
    assert split.new == 7


def test_no_suspects_means_every_label_goes_to_new_items():
    for scores in (None, np.zeros(0), np.array([np.nan, np.nan])):
        split = split_batch(8, 1, scores, np.ones(5))
        assert split.n_second_looks == 0 and split.new == 7 and split.holdout == 1


def test_ineligible_candidates_are_skipped():
    split = split_batch(4, 0, np.array([np.nan, 0.2, 0.1]), None, max_second_look_share=1.0)
    assert split.second_looks.tolist() == [2, 1]


def test_holdout_checks_come_out_of_the_holdout_share_and_a_small_batch_is_all_holdout():
    split = split_batch(5, 2, np.array([0.1]), None, n_holdout_checks=2)
    assert split.holdout == 4 and split.holdout_checks == 2 and split.n_second_looks == 0 and split.new == 1
    tiny = split_batch(3, 10, np.array([0.1]), None)
    assert tiny.holdout == 3 and tiny.new == 0 and tiny.n_second_looks == 0


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError):
        split_batch(-1, 0, None)
    with pytest.raises(ValueError):
        split_batch(5, 0, None, max_second_look_share=1.5)
    with pytest.raises(ValueError, match="rule"):
        split_batch(5, 0, None, rule="greedy")


def test_the_split_reads_as_a_dict_for_the_report():
    d = split_batch(6, 1, np.array([0.2, 0.3])).as_dict()
    assert d["new"] + d["second_looks"] + d["holdout"] == 6 and d["rule"]


def test_self_confidence_is_the_probability_of_the_label_given_and_the_least_confident_go_first():
    proba = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.05, 0.95]])
    given = np.array([0, 0, 1, 1])  # rows 1 and 2 disagree with the model, row 1 the most
    scores = self_confidence(proba, given)
    assert scores.tolist() == [0.9, 0.2, 0.4, 0.95]
    split = split_batch(10, 0, scores, max_second_look_share=0.2)
    assert split.second_looks.tolist() == [1, 2]
    assert DEFAULT_RANK == "self_confidence" and DEFAULT_RANK in RANKS
    with pytest.raises(ValueError, match="one probability row per label"):
        self_confidence(proba, given[:3])


def test_a_suspect_is_a_candidate_only_below_the_self_confidence_ceiling_and_above_the_top_class_floor():
    proba = np.array([[0.99, 0.01], [0.7, 0.3], [0.96, 0.04], [0.1, 0.9], [0.98, 0.02], [0.55, 0.45]])
    given = np.array([1, 1, 1, 1, 1, 1])  # self-confidence 0.01, 0.3, 0.04, 0.9, 0.02, 0.45
    eligible = np.array([True, True, True, True, False, True])  # row 4: looked at again already
    every = second_look_candidates(proba, given, eligible, max_self_confidence=1.0)
    assert np.isnan(every[4]) and np.round(every[[0, 1, 2, 3, 5]], 6).tolist() == [0.01, 0.3, 0.04, 0.9, 0.45]
    few = second_look_candidates(proba, given, eligible, max_self_confidence=0.05)
    assert np.flatnonzero(~np.isnan(few)).tolist() == [0, 2]  # 0.3, 0.9 and 0.45 look uncertain, not wrong; 4 is done
    sure = second_look_candidates(proba, given, eligible, min_top_confidence=0.6)
    assert np.flatnonzero(~np.isnan(sure)).tolist() == [0, 1, 2, 3]  # row 5: the model's top class is only 55%
    # the filter narrows, the share still caps: 50% of 10 would be 5 looks, only 2 candidates are left
    split = split_batch(10, 0, few, max_second_look_share=0.5)
    assert split.second_looks.tolist() == [0, 2] and split.new == 8
    # another ranking (ActiveLab's scores) orders the candidates; the filter is still on the probabilities
    ranked = second_look_candidates(proba, given, eligible, np.array([5.0, 1.0, 3.0, 0.0, 0.0, 0.0]), 0.05)
    assert np.flatnonzero(~np.isnan(ranked)).tolist() == [0, 2] and ranked[[0, 2]].tolist() == [5.0, 3.0]
    assert 0.0 <= DEFAULT_MIN_TOP_CONFIDENCE <= DEFAULT_MAX_SELF_CONFIDENCE <= 1.0


def test_bad_candidate_arguments_are_refused():
    proba, given = np.array([[0.9, 0.1], [0.2, 0.8]]), np.array([0, 1])
    with pytest.raises(ValueError, match="eligibility"):
        second_look_candidates(proba, given, np.array([True]))
    with pytest.raises(ValueError, match="ranking"):
        second_look_candidates(proba, given, np.array([True, True]), np.array([1.0]))
    with pytest.raises(ValueError, match="max_self_confidence"):
        second_look_candidates(proba, given, np.array([True, True]), max_self_confidence=1.5)
    with pytest.raises(ValueError, match="min_top_confidence"):
        second_look_candidates(proba, given, np.array([True, True]), min_top_confidence=-1)


def test_second_looks_open_from_the_given_labels_per_class():
    from learner.budget import second_looks_open

    assert not second_looks_open(99, 10, 10) and second_looks_open(100, 10, 10)
    assert second_looks_open(0, 10, 0)  # 0: from the first check
    assert second_looks_open(10, 0, 10)  # no classes counted yet: one class, not zero


def test_the_service_defaults_are_the_measured_ones():
    """config may not import learner, so its defaults are written twice: they must stay the measured values."""
    from config.settings import ServiceSettings
    from learner.budget import (
        DEFAULT_LOOKS_FROM_PER_CLASS,
        DEFAULT_MAX_SECOND_LOOK_SHARE,
    )

    service = ServiceSettings()
    assert service.second_looks_from_per_class == DEFAULT_LOOKS_FROM_PER_CLASS
    assert service.second_look_share == DEFAULT_MAX_SECOND_LOOK_SHARE
