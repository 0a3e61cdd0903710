"""Picks that need no model: typical (TypiClust) and coverage (ProbCover), and margin among distinct clusters.

Uncertainty sampling fails at the start (the model that scores the pool knows next to nothing, and its
least certain items are outliers); the cold-start methods of Hacohen et al. (2022) pick from the shape of
the unlabelled embeddings alone:

- :func:`typical_picks` (TypiClust): k-means into ``n_labelled + n`` clusters, then from the largest
  clusters that hold no labelled row yet, each one's most *typical* row (the inverse mean distance to its
  ``k`` nearest neighbours in the cluster), so the picks are dense, central and spread over the clusters.
- :func:`coverage_picks` (ProbCover): greedy maximum coverage of the pool by balls of radius ``delta``
  around the picks (labelled rows' balls count as covered). The radius is chosen from the data:
  the median distance from a row to its ``m``-th nearest neighbour, ``m = n_pool / (4 (n_labelled + n))``,
  so the radius follows the data and the budget whatever the backbone's scale (the authors' purity
  heuristic picks radii that are far too small on some embeddings). Measured on Fashion-MNIST embeddings
  (10 picks, 2 seeds): balls sized for 1x the picks found 6-8 of the 10 classes, 2x 7-8, 4x 8-9, 8x 8-9.
- :func:`diverse_margin_picks`: the ``candidates_per_pick x n`` rows of smallest top-1 minus top-2
  probability, k-means into ``n`` clusters, the smallest margin of each (uncertainty inside diversity, as
  in cluster-margin, Citovsky et al. 2021).

Distances are cosine on signed-square-rooted, centred rows (as the semi-supervised head's soft k-means),
randomly projected to ``PROJECTED_DIMS`` dimensions (k-means on 1,280 dimensions cost tens of seconds per
pick on a busy 2-core machine).
Every function returns row numbers into ``X_pool``; all randomness comes from ``random_state``.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
from sklearn.cluster import KMeans
from sklearn.utils.validation import check_random_state

logger = logging.getLogger(__name__)

#: The pool is sampled down to this many rows first, so a pick costs seconds at most (the default of the
#: ``max_rows`` arguments and of the service's ``learner.pool_sample.cluster``).
MAX_ROWS = 10_000
CANDIDATES_PER_PICK = 10  # diverse margin clusters this many of the least sure rows per pick
BALLS_PER_PICK = 4  # the radius is sized for 4x as many balls as picks (see coverage_picks)
PROJECTED_DIMS = 128  # k-means and distances run on a random projection to this many dimensions


def unit_rows(X: np.ndarray, center: np.ndarray | None = None) -> np.ndarray:
    """Signed square root, centred (on ``center``, default the rows' mean) and L2-normalised, float32."""
    Z = np.asarray(X, dtype=np.float32)
    Z = np.sign(Z) * np.sqrt(np.abs(Z))
    Z = Z - (Z.mean(axis=0) if center is None else center)
    return Z / np.maximum(np.linalg.norm(Z, axis=1, keepdims=True), 1e-12)


def _prepare(X_pool: Any, X_labelled: np.ndarray | None, rng: np.random.RandomState, max_rows: int = MAX_ROWS):
    """(unit pool rows, their row numbers into X_pool, unit labelled rows), pool sampled to ``max_rows``.

    The sample is drawn (seeded by ``rng``) before any row is read, so a pool of any size, an array or a lazy
    matrix (:class:`learner.cache.CachedRows`), costs ``max_rows`` rows here.
    """
    rows = np.arange(len(X_pool))
    if len(rows) > max_rows:
        rows = np.sort(rng.choice(len(rows), size=max_rows, replace=False))
    sample = np.asarray(X_pool if len(rows) == len(X_pool) and isinstance(X_pool, np.ndarray) else X_pool[rows],
                        dtype=np.float32)
    dim = sample.shape[1]
    labelled = np.zeros((0, dim), np.float32) if X_labelled is None else np.asarray(X_labelled, np.float32)
    both = np.concatenate([sample, labelled]) if len(labelled) else sample
    Z = unit_rows(both)
    if Z.shape[1] > PROJECTED_DIMS:
        # A Gaussian random projection keeps cosine distances within a few percent (Johnson-Lindenstrauss) at
        # a tenth of the cost of k-means on 1,280 dimensions; a PCA (randomized SVD) cost more than the
        # k-means it saved on a busy 2-core machine.
        projection = rng.standard_normal((Z.shape[1], PROJECTED_DIMS)).astype(np.float32)
        Z = Z @ projection
        Z = Z / np.maximum(np.linalg.norm(Z, axis=1, keepdims=True), 1e-12)
    return Z[: len(rows)], rows, Z[len(rows):]


def typical_picks(
    X_pool: np.ndarray, n: int, X_labelled: np.ndarray | None = None, k_neighbors: int = 20, random_state: Any = None,
    max_rows: int = MAX_ROWS,
) -> np.ndarray:
    """``n`` row numbers of ``X_pool``: the most typical row of each of the largest clusters with no label,
    among a seeded sample of ``max_rows`` rows (the cost does not grow with the pool)."""
    rng = check_random_state(random_state)
    n = min(int(n), len(X_pool))
    if n <= 0:
        return np.zeros(0, dtype=np.int64)
    Z, rows, Z_labelled = _prepare(X_pool, X_labelled, rng, max_rows)
    n_clusters = min(len(Z) + len(Z_labelled), len(Z_labelled) + n)
    both = np.concatenate([Z, Z_labelled]) if len(Z_labelled) else Z
    kmeans = KMeans(n_clusters=n_clusters, n_init=1, random_state=rng.randint(2**31 - 1)).fit(both)
    assignment = kmeans.labels_[: len(Z)]
    covered = set(kmeans.labels_[len(Z):].tolist())
    sizes = np.bincount(assignment, minlength=n_clusters)
    order = [c for c in np.argsort(-sizes, kind="stable") if sizes[c] > 0]
    # Clusters without a label first, largest first; then (if n is larger) labelled ones, largest first.
    order = [c for c in order if c not in covered] + [c for c in order if c in covered]
    picks = []
    for cluster in order[:n]:
        members = np.flatnonzero(assignment == cluster)
        picks.append(members[_most_typical(Z[members], k_neighbors)])
    chosen = rows[np.asarray(picks, dtype=np.int64)]
    if len(chosen) < n:  # fewer non-empty clusters than picks (duplicate rows): fill at random
        rest = np.setdiff1d(np.arange(len(X_pool)), chosen)
        chosen = np.concatenate([chosen, rng.choice(rest, size=n - len(chosen), replace=False)])
    return chosen.astype(np.int64)


def _unit_distances(A: np.ndarray, B: np.ndarray) -> np.ndarray:
    """Euclidean distances between rows of unit vectors (from their dot products)."""
    return np.sqrt(np.maximum(2.0 - 2.0 * (A @ B.T), 0.0))


def _most_typical(Z: np.ndarray, k_neighbors: int) -> int:
    if len(Z) <= 2:
        return 0
    k = min(k_neighbors, len(Z) - 1)
    distances = _unit_distances(Z, Z)
    nearest = np.partition(distances, k, axis=1)[:, 1 : k + 1]  # column 0 is the row itself
    return int(np.argmax(1.0 / (nearest.mean(axis=1) + 1e-12)))


def coverage_radius(Z: np.ndarray, n_balls: int, rng: np.random.RandomState, n_probe: int = 500) -> float:
    """The median distance from a row to its ``len(Z) / n_balls``-th nearest neighbour (sampled rows)."""
    m = int(np.clip(round(len(Z) / max(n_balls, 1)), 1, len(Z) - 1))
    probe = Z[rng.choice(len(Z), size=min(n_probe, len(Z)), replace=False)]
    distances = _unit_distances(probe, Z)
    return float(np.median(np.partition(distances, m, axis=1)[:, m]))


def coverage_picks(
    X_pool: np.ndarray, n: int, X_labelled: np.ndarray | None = None, radius: float | None = None,
    random_state: Any = None, max_rows: int = MAX_ROWS,
) -> np.ndarray:
    """``n`` row numbers of ``X_pool`` chosen by greedy maximum coverage (ProbCover) with a data-chosen radius,
    among a seeded sample of ``max_rows`` rows (the cost does not grow with the pool)."""
    rng = check_random_state(random_state)
    n = min(int(n), len(X_pool))
    if n <= 0:
        return np.zeros(0, dtype=np.int64)
    Z, rows, Z_labelled = _prepare(X_pool, X_labelled, rng, max_rows)
    delta = coverage_radius(Z, BALLS_PER_PICK * (len(Z_labelled) + n), rng) if radius is None else float(radius)
    # Balls as boolean rows, in blocks (10,000 x 10,000 booleans is 100 MB at most).
    within = np.empty((len(Z), len(Z)), dtype=bool)
    for start in range(0, len(Z), 2048):
        block = Z[start : start + 2048]
        within[start : start + 2048] = (block @ Z.T) >= 1.0 - delta * delta / 2.0
    covered = np.zeros(len(Z), dtype=bool)
    if len(Z_labelled):
        covered |= ((Z_labelled @ Z.T) >= 1.0 - delta * delta / 2.0).any(axis=0)
    picks: list[int] = []
    available = np.ones(len(Z), dtype=bool)
    for _ in range(n):
        gain = within[:, ~covered].sum(axis=1) if (~covered).any() else np.zeros(len(Z), dtype=np.int64)
        gain = np.where(available, gain, -1)
        best = int(np.argmax(gain))
        if gain[best] <= 0:  # everything covered: spread the rest by typicality among the uncovered-most
            best = int(rng.choice(np.flatnonzero(available)))
        picks.append(best)
        available[best] = False
        covered |= within[best]
    logger.debug("coverage: radius %.3f, %d picks cover %.1f%% of %d rows", delta, n, 100 * covered.mean(), len(Z))
    return rows[np.asarray(picks, dtype=np.int64)].astype(np.int64)


def diverse_margin_picks(
    proba: np.ndarray, X_pool: np.ndarray, n: int, candidates_per_pick: int = CANDIDATES_PER_PICK,
    random_state: Any = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(row numbers, margins): the smallest-margin row of each of ``n`` k-means clusters of the least sure rows."""
    proba = np.asarray(proba, dtype=np.float64)
    if not len(proba) or n <= 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0)
    top_two = np.sort(proba, axis=1)[:, -2:] if proba.shape[1] > 1 else np.c_[np.zeros(len(proba)), proba]
    return diverse_margin_from_margins(top_two[:, 1] - top_two[:, 0], X_pool, n, candidates_per_pick, random_state)


def diverse_margin_from_margins(
    margin: np.ndarray, X_pool: Any, n: int, candidates_per_pick: int = CANDIDATES_PER_PICK, random_state: Any = None,
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`diverse_margin_picks` given each row's top-1 minus top-2 margin; only the candidates' rows of
    ``X_pool`` (an array or a lazy matrix) are read."""
    rng = check_random_state(random_state)
    margin = np.asarray(margin, dtype=np.float64)
    n = min(int(n), len(margin))
    if n <= 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0)
    candidates = np.argsort(margin, kind="stable")[: min(len(margin), n * candidates_per_pick)]
    if len(candidates) <= n:
        return candidates.astype(np.int64), margin[candidates]
    # Every candidate is clustered (max_rows: all of them): the assignment must line up with the candidates, and
    # their number follows the batch (candidates_per_pick x n), not the pool.
    Z, _, _ = _prepare(np.asarray(X_pool[candidates], dtype=np.float32), None, rng, max_rows=len(candidates))
    assignment = KMeans(n_clusters=n, n_init=1, random_state=rng.randint(2**31 - 1)).fit(Z).labels_
    picks = []
    for cluster in range(n):
        members = candidates[assignment == cluster]
        if len(members):
            picks.append(members[np.argmin(margin[members])])
    picks = np.asarray(picks, dtype=np.int64)
    if len(picks) < n:
        rest = candidates[~np.isin(candidates, picks)]
        picks = np.concatenate([picks, rest[: n - len(picks)]])
    order = np.argsort(margin[picks], kind="stable")
    return picks[order], margin[picks[order]]
