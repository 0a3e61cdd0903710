"""Choose the semi-supervised head's settings on tuning seeds (disjoint from the 0-19 the benchmarks report).

    PYTHONPATH=$PWD .venv/bin/python benchmarks/semi_head.py [--seeds 100-109] [--grid temperature=0.05,0.1 ...]
        [--fixed NAME=V ...] [--budgets 1/class,3/class,5/class,10/class,5%]
        [--label-spreading] [--self-training] [--balanced] [--svc] [--smoke]

Fashion-MNIST 700/class, EfficientNet-Lite0 embeddings from the shared cache (data/embeddings), the curve's
holdout and stratified random picks (learner.curve) at the budgets (default 1, 3, 10 per class, 10%, 50%); the unlabelled rows
are the pool minus the picks (never the holdout). Prints mean holdout accuracy per setting and budget,
with the plain SoftmaxHead on the same picks as the first row, and each row's mean fit time at the last budget.
"""

from __future__ import annotations

import argparse
import itertools
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402


def fashion_dataset(per_class: int = 700):
    """Fashion-MNIST, ``per_class`` images per class (seed 0), from Debian's idx files."""
    from learner.datasets import load_dataset

    return load_dataset("fashion-mnist", fashion_mnist_dir=Path("/usr/share/datasets/fashion-mnist"),
                        per_class_limit=per_class, seed=0, max_pixels=40_000_000)


def embed_through_cache(model, sources) -> np.ndarray:
    """Features of ``sources`` from ``model``, through the shared cache (data/embeddings): each image embedded once."""
    from learner.cache import EmbeddingCache, embed_sources

    with EmbeddingCache(REPO / "data" / "embeddings", model.id) as cache:
        return embed_sources(model, cache, sources, progress=True)


def fashion_embeddings(per_class: int = 700, backbone: str = "efficientnet-lite0"):
    """(embeddings, labels) of Fashion-MNIST ``per_class`` per class (seed 0), embedded through the cache."""
    from learner.backbones import load_backbone, resolve_backbone

    dataset = fashion_dataset(per_class)
    model = load_backbone(resolve_backbone(backbone, REPO / "data"), batch_size=32)
    return embed_through_cache(model, dataset.sources), np.asarray(dataset.labels)


def budget_list(text: str) -> list:
    """``N/class`` and ``P%`` budget names, comma-separated, as :class:`learner.curve.Budget` objects."""
    from learner.curve import Budget

    return [Budget(name, per_class=int(name.split("/")[0])) if name.endswith("/class")
            else Budget(name, fraction=float(name.rstrip("%")) / 100) for name in text.split(",")]


class LabelSpreadingOnPCA:
    """scikit-learn's LabelSpreading on signed-sqrt, centred, PCA-whitened (256), L2 rows; kNN graph, k=50."""

    def fit(self, X: np.ndarray, y: np.ndarray) -> "LabelSpreadingOnPCA":
        from sklearn.semi_supervised import LabelSpreading

        from learner.selection import unit_rows

        Z = unit_rows(X).astype(np.float64)
        self.mean_ = Z.mean(axis=0)
        eigenvalues, eigenvectors = np.linalg.eigh((Z - self.mean_).T @ (Z - self.mean_) / len(Z))
        top = np.argsort(eigenvalues)[::-1][:256]
        self.projection_ = eigenvectors[:, top] / np.sqrt(eigenvalues[top])
        self.model_ = LabelSpreading(kernel="knn", n_neighbors=50, alpha=0.99, max_iter=100).fit(self._rows(X), y)
        self.classes_ = self.model_.classes_[self.model_.classes_ != -1]
        return self

    def _rows(self, X: np.ndarray) -> np.ndarray:
        from learner.selection import unit_rows

        Z = (unit_rows(X).astype(np.float64) - self.mean_) @ self.projection_
        return Z / np.linalg.norm(Z, axis=1, keepdims=True)

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        return self.model_.predict_proba(self._rows(X))


def balanced_head(**params):
    """The default head with class-balanced soft k-means: each EM step's responsibilities are Sinkhorn-scaled so
    every class takes an equal share of the unlabelled rows (as PT-MAP, Hu et al. 2021), which stops a prototype
    from drifting onto another class's cluster, at the price of assuming balanced classes."""
    from learner.semi import SemiSupervisedHead, _normalise, _softmax

    def sinkhorn(R: np.ndarray, n_iter: int = 30) -> np.ndarray:
        share = len(R) / R.shape[1]
        for _ in range(n_iter):
            R = R * (share / np.maximum(R.sum(axis=0), 1e-12))
            R = R / R.sum(axis=1, keepdims=True)
        return R

    class BalancedSemiSupervisedHead(SemiSupervisedHead):
        def _responsibilities(self, X_l, y_index, X_u, n_classes):
            Z, temperature = self._unit_rows(X_l, X_u, n_classes)
            Z_l, Z_u = Z[: len(X_l)], Z[len(X_l):]
            labelled_sum = np.eye(n_classes)[y_index].T @ Z_l
            prototypes = _normalise(labelled_sum)
            for _ in range(int(self.n_em_iter)):
                responsibilities = sinkhorn(_softmax(Z_u @ prototypes.T / temperature))
                prototypes = _normalise(labelled_sum + responsibilities.T @ Z_u)
            return sinkhorn(_softmax(Z_u @ prototypes.T / temperature))

    return BalancedSemiSupervisedHead(**params)


def seed_range(text: str) -> list[int]:
    first, _, last = text.partition("-")
    return list(range(int(first), int(last or first) + 1))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="100-109", help="tuning seeds, FIRST-LAST (default 100-109)")
    parser.add_argument("--grid", nargs="*", default=["temperature=0.05,0.1,0.2", "whiten_dims=0,128"],
                        help="NAME=V1,V2 of SemiSupervisedHead parameters")
    parser.add_argument("--fixed", nargs="*", default=[], help="NAME=V held for every setting")
    parser.add_argument("--no-baseline", action="store_true", help="skip the plain SoftmaxHead row")
    parser.add_argument("--label-spreading", action="store_true",
                        help="add scikit-learn's LabelSpreading (kNN graph, k=50, on whitened PCA-256 rows) as a row")
    parser.add_argument("--self-training", action="store_true",
                        help="add scikit-learn's SelfTrainingClassifier around the plain SoftmaxHead as a row")
    parser.add_argument("--balanced", action="store_true",
                        help="add the default head with class-balanced (Sinkhorn) soft k-means as a row")
    parser.add_argument("--svc", action="store_true",
                        help="add an RBF support-vector classifier (C=10) on the head's signed-sqrt, unit-norm rows "
                             "as a row: is a kernel head worth its fit time at the large budgets?")
    parser.add_argument("--budgets", default="1/class,3/class,10/class,10%,50%",
                        help="N/class or P%% budgets, comma-separated (default 1/class,3/class,10/class,10%%,50%%)")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes (seconds): check that the benchmark runs")
    args = parser.parse_args()
    if args.smoke:
        args.seeds, args.grid, args.budgets = "100", ["temperature=0.1"], "1/class,3/class,10%"

    from learner.curve import budget_picks, holdout_split
    from learner.rules import proba_in_order
    from learner.head import SoftmaxHead
    from learner.semi import SemiSupervisedHead

    X, y = fashion_embeddings(per_class=15 if args.smoke else 700)
    budgets = budget_list(args.budgets)
    def parse(value):
        try:
            return int(value)
        except ValueError:
            try:
                return float(value)
            except ValueError:
                return value
    fixed = {k: parse(v) for k, v in (item.split("=") for item in args.fixed)}
    names = [item.split("=")[0] for item in args.grid]
    values = [[parse(v) for v in item.split("=")[1].split(",")] for item in args.grid]
    settings = ([] if args.no_baseline else [None]) + (["label_spreading"] if args.label_spreading else []) + (
        ["balanced"] if args.balanced else []) + (["self_training"] if args.self_training else []) + (
        ["svc"] if args.svc else []) + [
        dict(zip(names, combo)) for combo in itertools.product(*values)
    ]
    seeds = seed_range(args.seeds)
    classes = np.unique(y)
    results = {i: {b.name: [] for b in budgets} for i in range(len(settings))}
    fit_seconds = {i: [] for i in range(len(settings))}  # at the last budget
    started = time.perf_counter()
    for seed in seeds:
        pool, holdout = holdout_split(y, 0.1, seed)
        for budget in budgets:
            picks = budget_picks(y, pool, budget, seed)
            rest = np.setdiff1d(pool, picks)
            # The picks, then the rest of the pool unlabelled (-1); never the holdout.
            X_fit = np.concatenate([X[picks], X[rest]])
            y_fit = np.concatenate([y[picks], np.full(len(rest), -1)])
            for i, setting in enumerate(settings):
                fit_started = time.perf_counter()
                if setting is None:
                    head = SoftmaxHead(random_state=seed).fit(X[picks], y[picks])
                elif setting == "label_spreading":
                    head = LabelSpreadingOnPCA().fit(X_fit, y_fit)
                elif setting == "self_training":
                    from sklearn.semi_supervised import SelfTrainingClassifier

                    head = SelfTrainingClassifier(SoftmaxHead(random_state=seed), threshold=0.75, max_iter=10)
                    head.fit(X_fit, y_fit)
                elif setting == "balanced":
                    head = balanced_head(random_state=seed, **fixed).fit(X_fit, y_fit)
                elif setting == "svc":
                    from sklearn.pipeline import make_pipeline
                    from sklearn.preprocessing import FunctionTransformer
                    from sklearn.svm import SVC

                    # The plain head's own row transform; SVC's gamma="scale" makes its sqrt(d) norm irrelevant.
                    head = make_pipeline(FunctionTransformer(SoftmaxHead()._transform),
                                         SVC(C=10, probability=False)).fit(X[picks], y[picks])
                else:
                    head = SemiSupervisedHead(random_state=seed, **fixed, **setting).fit(X_fit, y_fit)
                if budget is budgets[-1]:
                    fit_seconds[i].append(time.perf_counter() - fit_started)
                if setting == "svc":  # no probabilities (Platt scaling would cost five more fits): its decisions
                    predicted = head.predict(X[holdout])
                else:
                    predicted = classes[proba_in_order(head, X[holdout], classes).argmax(1)]
                results[i][budget.name].append(float(np.mean(predicted == y[holdout])))
        print(f"seed {seed} done ({time.perf_counter() - started:.0f} s)", flush=True)
        print(f"\nseeds {seeds[0]}-{seed}, fixed {fixed}; load {os.getloadavg()[0]:.1f}")
        print(f"{'setting':>44} " + " ".join(f"{b.name:>9}" for b in budgets) + f" {'s/fit @' + budgets[-1].name:>12}")
        for i, setting in enumerate(settings):
            label = ("SoftmaxHead (supervised)" if setting is None else "LabelSpreading (kNN 50, PCA-w 256)"
                     if setting == "label_spreading" else "self-training (SoftmaxHead, p >= 0.75)"
                     if setting == "self_training" else "class-balanced soft k-means (Sinkhorn)"
                     if setting == "balanced" else "RBF SVC (C=10, supervised)"
                     if setting == "svc" else ", ".join(f"{k}={v}" for k, v in setting.items()))
            print(f"{label:>44} " + " ".join(f"{np.mean(results[i][b.name]):>9.1%}" for b in budgets)
                  + f" {np.mean(fit_seconds[i]):>12.2f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
