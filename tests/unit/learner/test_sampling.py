import numpy as np
import pytest

from learner.sampling import quotas, stratified_split

LABELS = np.repeat(np.arange(3), [10, 20, 5])


def test_takes_the_asked_count_of_every_class_and_leaves_the_rest():
    taken, rest = stratified_split(LABELS, 2, seed=0)
    assert np.bincount(LABELS[taken]).tolist() == [2, 2, 2]
    assert sorted(np.concatenate([taken, rest]).tolist()) == list(range(len(LABELS)))
    assert np.all(np.diff(taken) > 0) and np.all(np.diff(rest) > 0)


def test_counts_per_class_a_function_of_the_class_size_and_clipping():
    taken, _ = stratified_split(LABELS, [1, 0, 99], seed=0)
    assert np.bincount(LABELS[taken], minlength=3).tolist() == [1, 0, 5]
    taken, _ = stratified_split(LABELS, lambda n: n // 5, seed=0)
    assert np.bincount(LABELS[taken]).tolist() == [2, 4, 1]
    with pytest.raises(ValueError, match="3 classes"):
        stratified_split(LABELS, [1, 1], seed=0)


def test_seeded_and_restricted_to_rows():
    assert np.array_equal(stratified_split(LABELS, 3, 7)[0], stratified_split(LABELS, 3, 7)[0])
    assert not np.array_equal(stratified_split(LABELS, 3, 7)[0], stratified_split(LABELS, 3, 8)[0])
    rows = np.arange(10, 35)
    taken, rest = stratified_split(LABELS, 100, 0, rows=rows)
    assert taken.tolist() == rows.tolist() and rest.size == 0


def test_quotas_spread_a_total_evenly():
    assert quotas(10, 4) == [3, 3, 2, 2]
    assert sum(quotas(1000, 10)) == 1000
