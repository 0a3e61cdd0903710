"""cleanlab on our probabilities: injected label errors are found, a vote settles a disagreement."""

from __future__ import annotations

import numpy as np
import pytest

from learner.label_issues import consensus, find_suspects, second_look_scores


def _confident(y: np.ndarray, n_classes: int, p: float = 0.8) -> np.ndarray:
    proba = np.full((len(y), n_classes), (1 - p) / (n_classes - 1))
    proba[np.arange(len(y)), y] = p
    return proba


def test_injected_errors_are_the_suspects_with_their_true_class():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 5, 300)
    noisy = y.copy()
    wrong = rng.choice(300, 30, replace=False)
    noisy[wrong] = (y[wrong] + 1) % 5
    found = find_suspects(noisy, _confident(y, 5))
    assert set(found.indices) == set(wrong)
    np.testing.assert_array_equal(found.suggested, y[found.indices])
    assert (np.diff(found.scores) >= 0).all() and (found.scores < 0.5).all()  # most suspect first


def test_too_few_labels_flag_nothing():
    y = np.array([0, 1, 2])
    assert len(find_suspects(y, _confident(np.array([1, 2, 0]), 3)).indices) == 0


def test_the_vote_beats_the_wrong_annotator_and_rates_them_lower():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 4, 200)
    sloppy = np.where(rng.random(200) < 0.3, (y + 1) % 4, y)
    answers = np.column_stack([sloppy, y, np.where(np.arange(200) < 100, y, np.nan)]).astype(float)
    answers[100:, 1] = np.nan  # items 100.. only the sloppy annotator answered
    verdict = consensus(answers, _confident(y, 4, 0.6))
    assert (verdict.labels[:100] == y[:100]).all()
    assert verdict.annotator_quality[0] < verdict.annotator_quality[1]


def test_one_answer_per_item_stands():
    y = np.array([0, 1, 1, 0])
    answers = np.column_stack([y, np.full(4, np.nan)])
    verdict = consensus(answers, _confident(np.array([1, 1, 1, 0]), 2))
    np.testing.assert_array_equal(verdict.labels, y)
    with pytest.raises(ValueError, match="at least one answer"):
        consensus(np.full((2, 2), np.nan), _confident(np.array([0, 1]), 2))


def test_activelab_scores_old_and_new_items_on_one_scale():
    y = np.repeat(np.arange(3), 10)
    answers = np.column_stack([y, y]).astype(float)
    labelled, pool = second_look_scores(answers, _confident(y, 3), np.full((5, 3), 1 / 3))
    assert labelled.shape == (30,) and pool.shape == (5,)
    assert pool.mean() < labelled.mean()  # an item the model knows nothing of is worth more than a settled one


def test_cleanlabs_caution_lines_go_to_the_log_at_debug_not_to_stdout(capsys, caplog):
    import logging

    # Class 2 is given once and outvoted: CROWDLAB's consensus drops it and cleanlab prints a CAUTION about it.
    answers = np.array([[0, 0], [1, 1], [0, 2], [0, 0], [1, 1], [1, np.nan], [0, np.nan]], dtype=float)
    proba = np.full((7, 3), 0.1)
    proba[np.arange(7), [0, 1, 0, 0, 1, 1, 0]] = 0.8
    with caplog.at_level(logging.DEBUG, logger="learner.label_issues"):
        second_look_scores(answers, proba, proba[:3])
    assert "CAUTION" not in capsys.readouterr().out
    cautions = [r for r in caplog.records if r.name == "learner.label_issues" and "CAUTION" in r.getMessage()]
    assert cautions and all(r.levelno == logging.DEBUG for r in cautions)
