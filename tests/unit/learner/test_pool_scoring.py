"""A pool of any size: scored in chunks (the same picks as whole), clustered on a seeded sample, read lazily."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import learner.head
import learner.query
from learner.cache import EmbeddingCache
from learner.head import SoftmaxHead
from learner.query import query
from learner.selection import coverage_picks, typical_picks


def clustered_pool(n: int, dim: int = 24, n_classes: int = 4, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = rng.gamma(1.0, 1.0, size=(n_classes, dim))
    y = np.arange(n) % n_classes
    return np.maximum(centres[y] + rng.normal(0, 0.7, size=(n, dim)), 0).astype(np.float32), y


@pytest.fixture(scope="module")
def fitted() -> tuple[SoftmaxHead, np.ndarray, np.ndarray]:
    X, y = clustered_pool(3_000)
    head = SoftmaxHead(random_state=0, max_iter=200).fit(X[:40], y[:40])
    return head, X[40:], X[:40]


class CountingRows:
    """A pool that counts the rows read from it (our seam: what query and selection index)."""

    def __init__(self, X: np.ndarray) -> None:
        self.X, self.read = X, 0
        self.shape = X.shape

    def __len__(self) -> int:
        return len(self.X)

    def __getitem__(self, index):
        rows = self.X[index]
        self.read += len(rows)
        return rows


@pytest.mark.parametrize("strategy", ["least_confidence", "margin", "entropy", "diverse_margin", "auto"])
def test_chunked_scoring_picks_what_whole_pool_scoring_picks(fitted, monkeypatch, strategy):
    head, X_pool, X_labelled = fitted
    kwargs = dict(random_state=7, X_labelled=X_labelled, n_classes=5)  # n_classes > seen: auto seeks as well
    monkeypatch.setattr(learner.query, "SCORE_CHUNK", 10**9)
    whole = query(head, X_pool, 12, strategy, **kwargs)
    monkeypatch.setattr(learner.query, "SCORE_CHUNK", 97)
    chunked = query(head, X_pool, 12, strategy, **kwargs)
    assert chunked.indices.tolist() == whole.indices.tolist()
    np.testing.assert_allclose(chunked.scores, whole.scores, rtol=1e-12, equal_nan=True)


def test_chunked_logits_equal_whole_batch_logits(fitted, monkeypatch):
    head, X_pool, _ = fitted
    whole = head.predict_proba(X_pool)
    monkeypatch.setattr(learner.head, "LOGIT_CHUNK", 64)
    np.testing.assert_allclose(head.predict_proba(X_pool), whole, rtol=1e-10, atol=1e-15)


@pytest.mark.parametrize("picks", [typical_picks, coverage_picks])
def test_clustering_reads_a_seeded_sample_whose_size_is_a_setting(picks):
    X, _ = clustered_pool(4_000)
    pool = CountingRows(X)
    first = picks(pool, 8, max_rows=500, random_state=3)
    assert pool.read == 500  # the cost follows the sample, not the pool
    assert picks(CountingRows(X), 8, max_rows=500, random_state=3).tolist() == first.tolist()
    assert len(set(first.tolist())) == 8 and first.max() < len(X)
    others = {tuple(picks(CountingRows(X), 8, max_rows=500, random_state=seed).tolist()) for seed in (4, 5, 6)}
    assert others != {tuple(first.tolist())}  # another seed, another sample


def test_diverse_margin_reads_the_pool_once_in_chunks_plus_its_candidates(fitted, monkeypatch):
    head, X_pool, X_labelled = fitted
    monkeypatch.setattr(learner.query, "SCORE_CHUNK", 256)
    pool = CountingRows(X_pool)
    chosen = query(head, pool, 10, "diverse_margin", random_state=0)
    assert len(chosen.indices) == 10
    assert pool.read == len(X_pool) + 10 * 10  # every row scored once, then the 100 least sure clustered


def test_a_cached_pool_is_read_lazily_and_picks_as_an_array_does(tmp_path: Path, fitted):
    head, X_pool, X_labelled = fitted
    cache = EmbeddingCache(tmp_path, "test-backbone")
    hashes = [f"h{i}" for i in range(len(X_pool))]
    cache.put_many(hashes[::-1], X_pool[::-1])  # file order differs from pool order
    matrix = cache.matrix(cache.rows(hashes))
    assert matrix.shape == X_pool.shape
    np.testing.assert_array_equal(np.asarray(matrix), X_pool)
    np.testing.assert_array_equal(matrix[np.array([5, 2, 900])], X_pool[[5, 2, 900]])
    np.testing.assert_array_equal(matrix.take(np.arange(10, 20))[3:5], X_pool[13:15])
    assert cache.rows(["h3", "nope"]).tolist()[1] == -1
    for strategy in ("auto", "margin", "typical"):
        lazy = query(head, matrix, 6, strategy, random_state=1, X_labelled=X_labelled, n_classes=4)
        eager = query(head, X_pool, 6, strategy, random_state=1, X_labelled=X_labelled, n_classes=4)
        assert lazy.indices.tolist() == eager.indices.tolist()
    with pytest.raises(ValueError, match="cached vectors only"):
        cache.matrix(np.array([0, -1]))


def test_diverse_margin_scores_a_seeded_sample_of_a_large_pool(fitted, monkeypatch):
    head, X_pool, _ = fitted
    monkeypatch.setattr(learner.query, "MARGIN_SAMPLE", 1_000)
    pool = CountingRows(X_pool)
    first = query(head, pool, 10, "diverse_margin", random_state=0)
    assert pool.read == 1_000 + 10 * 10  # the sample scored, then the 100 least sure of it clustered
    assert query(head, X_pool, 10, "diverse_margin", random_state=0).indices.tolist() == first.indices.tolist()


@pytest.mark.parametrize("strategy", ["typical", "coverage"])
def test_the_cluster_sample_reaches_the_clustering_strategies(strategy):
    X, _ = clustered_pool(2_000)
    whole, sampled = CountingRows(X), CountingRows(X)
    first = query(None, whole, 6, strategy, random_state=3)
    assert whole.read == len(X)  # the default sample (10,000) holds this pool: every row clustered
    picked = query(None, sampled, 6, strategy, random_state=3, cluster_sample=300)
    assert sampled.read == 300  # the setting, not the pool, sets what is read
    assert picked.indices.tolist() != first.indices.tolist()
    assert query(None, X, 6, strategy, random_state=3, cluster_sample=300).indices.tolist() == picked.indices.tolist()


def test_the_cluster_sample_reaches_autos_typical_picks(fitted):
    head, X_pool, X_labelled = fitted
    pool = CountingRows(X_pool)
    query(head, pool, 6, "auto", random_state=1, X_labelled=X_labelled[:3], n_classes=4, cluster_sample=200)
    assert pool.read == 200  # 3 labels for 4 classes: still typical picks, on a 200-row sample


def test_the_margin_sample_reaches_diverse_margin_and_auto(fitted):
    head, X_pool, X_labelled = fitted
    for strategy, kwargs in (("diverse_margin", {}), ("auto", {"X_labelled": X_labelled, "n_classes": 4})):
        pool = CountingRows(X_pool)
        picked = query(head, pool, 10, strategy, random_state=0, margin_sample=700, **kwargs)
        assert pool.read == 700 + 10 * 10  # the sample scored, then the 100 least sure of it clustered
        whole = query(head, X_pool, 10, strategy, random_state=0, **kwargs)
        assert picked.indices.tolist() != whole.indices.tolist()
        # At or above the pool's size the sample is the pool: the whole pool's picks.
        assert query(head, X_pool, 10, strategy, random_state=0, margin_sample=len(X_pool),
                     **kwargs).indices.tolist() == whole.indices.tolist()


@pytest.mark.parametrize("size", [0, -1, 2.5, "100", True])
@pytest.mark.parametrize("name", ["margin_sample", "cluster_sample"])
def test_a_pool_sample_must_be_a_positive_integer(fitted, name, size):
    head, X_pool, _ = fitted
    with pytest.raises(ValueError, match=f"{name} must be a positive integer"):
        query(head, X_pool, 3, "auto", random_state=0, **{name: size})


def test_diverse_margin_clusters_every_candidate_of_a_large_batch():
    from learner.selection import MAX_ROWS, diverse_margin_from_margins

    rng = np.random.default_rng(0)
    n = MAX_ROWS // 10 + 1  # candidates (10 a pick) above the clustering's default row cap
    X = rng.normal(size=(n * 10 + 50, 4)).astype(np.float32)
    picks, margins = diverse_margin_from_margins(rng.uniform(size=len(X)), X, n, random_state=0)
    assert len(picks) == n and len(set(picks.tolist())) == n
    assert np.all(np.diff(margins) >= 0)
