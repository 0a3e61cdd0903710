"""Cold-start picks compared on tuning seeds: which n images to label first, with no label at all.

    PYTHONPATH=$PWD .venv/bin/python benchmarks/cold_start.py [--labels 10] [--seeds 100-107] [--smoke]

Fashion-MNIST 700/class (EfficientNet-Lite0, the shared cache), the curve's holdout per seed; each picker
chooses ``--labels`` pool images with no label, their true labels are revealed, and the default head
(``learner.semi.SemiSupervisedHead``, the rest of the pool unlabelled) is scored on the holdout. Pickers:
``learner.selection.typical_picks`` (TypiClust on a random projection to 128 dims, juicer's), the same
TypiClust on a PCA to 128 dims, on a whitened PCA to 64, and on all 1,280 dims, and the point nearest each
k-means centroid (PCA 128). Prints mean holdout accuracy and the mean number of classes the picks cover.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

import numpy as np  # noqa: E402


def _pca_rows(X: np.ndarray, dims: int, whiten: bool) -> np.ndarray:
    from learner.selection import unit_rows

    Z = unit_rows(X).astype(np.float64)
    Z -= Z.mean(axis=0)
    eigenvalues, eigenvectors = np.linalg.eigh(Z.T @ Z / len(Z))
    top = np.argsort(eigenvalues)[::-1][:dims]
    Z = Z @ (eigenvectors[:, top] / (np.sqrt(eigenvalues[top]) if whiten else 1.0))
    return Z / np.linalg.norm(Z, axis=1, keepdims=True)


def _typical_on(Z: np.ndarray, n: int, seed: int, nearest_centroid: bool = False) -> np.ndarray:
    from sklearn.cluster import KMeans

    from learner.selection import _most_typical

    kmeans = KMeans(n_clusters=n, n_init=1, random_state=seed).fit(Z)
    picks = []
    for cluster in range(n):
        members = np.flatnonzero(kmeans.labels_ == cluster)
        if nearest_centroid:
            picks.append(members[np.argmax(Z[members] @ kmeans.cluster_centers_[cluster])])
        else:
            picks.append(members[_most_typical(Z[members], 20)])
    return np.asarray(picks)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--labels", type=int, default=10)
    parser.add_argument("--seeds", default="100-107", help="tuning seeds, FIRST-LAST")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes (seconds): check that the benchmark runs")
    args = parser.parse_args()
    if args.smoke:
        args.seeds = "100"
    from semi_head import fashion_embeddings, seed_range

    from learner.curve import holdout_split
    from learner.rules import proba_in_order
    from learner.selection import typical_picks, unit_rows
    from learner.semi import SemiSupervisedHead

    X, y = fashion_embeddings(per_class=15 if args.smoke else 700)
    classes = np.unique(y)
    n = args.labels
    pickers = {
        "typical (random projection 128, juicer)": lambda Xp, s: typical_picks(Xp, n, random_state=s),
        "typical (PCA 128)": lambda Xp, s: _typical_on(_pca_rows(Xp, 128, False), n, s),
        "typical (whitened PCA 64)": lambda Xp, s: _typical_on(_pca_rows(Xp, 64, True), n, s),
        "typical (all 1,280 dims)": lambda Xp, s: _typical_on(unit_rows(Xp), n, s),
        "nearest each centroid (PCA 128)": lambda Xp, s: _typical_on(_pca_rows(Xp, 128, False), n, s, True),
    }
    accuracy = {name: [] for name in pickers}
    covered = {name: [] for name in pickers}
    seeds = seed_range(args.seeds)
    for seed in seeds:
        pool, holdout = holdout_split(y, 0.1, seed)
        for name, pick in pickers.items():
            picks = pool[pick(X[pool], seed)]
            covered[name].append(len(set(y[picks].tolist())))
            rest = np.setdiff1d(pool, picks)
            head = SemiSupervisedHead(random_state=seed).fit(
                np.concatenate([X[picks], X[rest]]), np.concatenate([y[picks], np.full(len(rest), -1)])
            )
            proba = proba_in_order(head, X[holdout], classes)
            accuracy[name].append(float(np.mean(classes[proba.argmax(1)] == y[holdout])))
        print(f"seed {seed} done", flush=True)
    print(f"\n{n} labels chosen with none given, seeds {seeds[0]}-{seeds[-1]}; load {os.getloadavg()[0]:.1f}")
    print(f"{'picker':>42} {'accuracy':>9} {'classes':>8}")
    for name in pickers:
        print(f"{name:>42} {np.mean(accuracy[name]):>9.1%} {np.mean(covered[name]):>8.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
