"""How good the service's own measure is, and what its holdout costs (issue 19, "Must measure" 2 and 3).

    PYTHONPATH=$PWD nice -n 5 .venv/bin/python benchmarks/holdout_quality.py [--seeds 0-4] [--labels 200] [--smoke]

Fashion-MNIST with its true labels held back: a pool of ``--pool-per-class`` train images per class and 2,000
t10k images (200 per class) that no loop ever sees, EfficientNet-Lite0 embeddings through the shared cache
(``benchmarks/semi_head.embed_through_cache``). Per seed the service's loop is emulated on the embeddings:

* the reserved holdout exactly as :mod:`app.core.holdout` makes it (``HoldoutSettings()`` defaults: 20 per
  class capped at 500 and at ``max_pool_share`` of the pool, a uniform draw from the pool, never queried, never
  trained; its tasks first until ``min_labels`` are labelled, then ``share`` of each ``review_batch_size``
  refresh), a version after every refresh's ``review_batch_size`` picks, a fresh head (``--head``: the plain
  softmax head by default, fast enough for a shared machine; ``semi`` the service's) and the ``auto`` strategy;
* every version's holdout accuracy with the Wilson interval the report draws
  (:func:`learner.metrics.wilson_interval`, as ``app.http.reports``) against its accuracy on the 2,000 t10k images;
* the importance-weighted estimate (:mod:`learner.estimate`) from the training labels when they are *sampled*
  (:func:`learner.query.sampled_query`) instead of taken top-k, against the same t10k figure;
* the holdout's cost: labels spent on it, and accuracy at the same total labels when they all train (the demo's
  free holdout) against the service's split.

Prints tables; ``--smoke`` runs a tiny version (a few seconds, random vectors, no backbone) to check it works.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

import numpy as np  # noqa: E402

FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
T10K_PER_CLASS = 200  # 2,000 images never seen


def fashion_split(pool_per_class: int, backbone: str = "efficientnet-lite0"):
    """(pool X, pool y, t10k X, t10k y): train images as the pool, 200 t10k images per class never seen."""
    from semi_head import embed_through_cache

    from learner.backbones import load_backbone, resolve_backbone
    from learner.datasets import load_fashion_mnist
    from learner.sampling import stratified_split

    dataset = load_fashion_mnist(FASHION_DIR)
    is_test = np.array([item.split("/")[1] == "t10k" for item in dataset.item_ids])
    pool, _ = stratified_split(dataset.labels, pool_per_class, seed=0, rows=np.flatnonzero(~is_test))
    unseen, _ = stratified_split(dataset.labels, T10K_PER_CLASS, seed=0, rows=np.flatnonzero(is_test))
    model = load_backbone(resolve_backbone(backbone, REPO / "data"), batch_size=32)
    rows = np.concatenate([pool, unseen])
    X = embed_through_cache(model, [dataset.sources[i] for i in rows])
    return X[: len(pool)], dataset.labels[pool], X[len(pool):], dataset.labels[unseen]


def smoke_split(seed: int = 0):
    """Four well-separated synthetic classes: the same shapes as :func:`fashion_split`, no backbone."""
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((4, 16)) * 2.2

    def draw(n_per_class):
        y = np.repeat(np.arange(4), n_per_class)
        return np.abs(centers[y] + rng.standard_normal((len(y), 16))).astype(np.float32), y

    return (*draw(100), *draw(50))


@dataclass
class Version:
    """One emulated version: its labels, its t10k accuracy, the holdout's figure and the weighted estimate."""

    arm: str
    seed: int
    n_train: int
    n_holdout: int
    unseen: float
    holdout: tuple[float, float, float] | None  # accuracy, Wilson low, high (None below min_labels)
    estimate: Any = None  # learner.estimate.WeightedEstimate on the sampled arm


def run_arm(arm: str, seed: int, data, make_head, n_labels: int, batch: int, holdout_settings) -> list[Version]:
    """The service's loop for one seed: holdout reserved and labelled as app.core.holdout does, picks by ``arm``."""
    from app.core.holdout import holdout_tasks_to_queue, per_refresh
    from learner.estimate import oof_weighted_accuracy
    from learner.metrics import wilson_interval
    from learner.query import query, sampled_query
    from learner.rules import proba_in_order

    X_pool, y_pool, X_unseen, y_unseen = data
    classes = np.unique(y_pool)
    n_classes = len(classes)
    # The reservation: a seeded uniform draw, at most max_pool_share of the pool; annotators label it in draw order.
    size = min(holdout_settings.target_size(n_classes), int(len(y_pool) * holdout_settings.max_pool_share))
    holdout = np.random.default_rng([holdout_settings.seed, seed]).permutation(len(y_pool))[:size]
    in_pool = np.ones(len(y_pool), dtype=bool)
    in_pool[holdout] = False
    n_pool = int(in_pool.sum())  # N of the weights: the pool the picks are drawn from
    labelled, q = np.zeros(0, dtype=np.int64), np.zeros(0)
    n_holdout = 0
    rng = np.random.RandomState(seed)
    head, versions = None, []
    while len(labelled) < n_labels:
        n_holdout += holdout_tasks_to_queue(n_holdout, 0, size - n_holdout, holdout_settings.min_labels,
                                            per_refresh(holdout_settings, batch))
        rows = np.flatnonzero(in_pool)
        n = min(batch, n_labels - len(labelled))
        strategy = "random" if arm == "random" else "auto"
        kwargs = {"random_state": rng, "X_labelled": X_pool[labelled] if len(labelled) else None, "n_classes": n_classes}
        if arm == "top-k":
            picked, picked_q = query(head, X_pool[rows], n, strategy, **kwargs).indices, np.full(n, np.nan)
        else:
            drawn = sampled_query(head, X_pool[rows], n, strategy, **kwargs)
            picked, picked_q = drawn.indices, drawn.q
        labelled = np.concatenate([labelled, rows[picked]])
        q = np.concatenate([q, picked_q])
        in_pool[rows[picked]] = False
        if len(np.unique(y_pool[labelled])) < 2:
            continue
        head = make_head(seed)
        unlabelled = X_pool[in_pool] if hasattr(head, "max_unlabelled") else None  # a semi-supervised head: the pool
        if unlabelled is None:
            head.fit(X_pool[labelled], y_pool[labelled])
        else:
            head.fit(np.concatenate([X_pool[labelled], unlabelled]),
                     np.concatenate([y_pool[labelled], np.full(len(unlabelled), -1)]))
        unseen = float(np.mean(classes[np.argmax(proba_in_order(head, X_unseen, classes), axis=1)] == y_unseen))
        figure = None
        if n_holdout >= holdout_settings.min_labels:
            rows_h = holdout[:n_holdout]
            right = int(np.sum(classes[np.argmax(proba_in_order(head, X_pool[rows_h], classes), axis=1)] == y_pool[rows_h]))
            figure = (right / n_holdout, *wilson_interval(right, n_holdout))
        estimate = None
        if arm != "top-k":
            estimate = oof_weighted_accuracy(lambda: make_head(seed), X_pool[labelled], y_pool[labelled], q, n_pool,
                                             n_classes, seed=seed, X_unlabelled=unlabelled)
        versions.append(Version(arm, seed, len(labelled), n_holdout, unseen, figure, estimate))
    return versions


def _mean(values) -> str:
    values = [v for v in values if v is not None]
    return f"{np.mean(values):6.1%}" if values else "     -"


def tables(versions: list[Version], n_labels: int) -> str:
    """The figures: the holdout's and the estimate's error and coverage, label efficiency, the holdout's cost."""
    out = []
    arms = list(dict.fromkeys(v.arm for v in versions))
    seeds = sorted({v.seed for v in versions})
    counts = sorted({v.n_train for v in versions})
    out.append(f"seeds {seeds}, {len(versions)} versions; load average {os.getloadavg()[0]:.1f}")
    out.append("\n1. The reserved holdout's figure vs accuracy on the unseen t10k images (all arms' versions)")
    out.append(f"{'train labels':>12} {'holdout n':>9} {'unseen':>7} {'holdout':>7} {'MAE':>6} {'covered':>7}")
    for n in counts:
        rows = [v for v in versions if v.n_train == n and v.holdout is not None]
        if rows:
            out.append(f"{n:>12} {np.mean([v.n_holdout for v in rows]):>9.0f} {_mean([v.unseen for v in rows]):>7} "
                       f"{_mean([v.holdout[0] for v in rows]):>7} "
                       f"{np.mean([abs(v.holdout[0] - v.unseen) for v in rows]):>6.1%} "
                       f"{np.mean([v.holdout[1] <= v.unseen <= v.holdout[2] for v in rows]):>7.0%}")
    measured = [v for v in versions if v.holdout is not None]
    out.append(f"{'all':>12} {'':>9} {'':>7} {'':>7} {np.mean([abs(v.holdout[0] - v.unseen) for v in measured]):>6.1%} "
               f"{np.mean([v.holdout[1] <= v.unseen <= v.holdout[2] for v in measured]):>7.0%}  (goal >= 90% covered)")
    weighed = [v for v in versions if v.estimate is not None]
    if weighed:
        out.append("\n2. The weighted estimate (sampled picks, out-of-fold, LURE) vs the unseen accuracy, by arm")
        out.append(f"{'arm':>8} {'train labels':>12} {'unseen':>7} {'weighted':>8} {'MAE':>6} {'covered':>7} "
                   f"{'naive MAE':>9} {'holdout MAE':>11}")
        for arm in [a for a in arms if any(v.arm == a and v.estimate is not None for v in versions)]:
            for n in counts:
                rows = [v for v in weighed if v.arm == arm and v.n_train == n]
                if not rows:
                    continue
                holdout_mae = [abs(v.holdout[0] - v.unseen) for v in rows if v.holdout is not None]
                out.append(
                    f"{arm:>8} {n:>12} {_mean([v.unseen for v in rows]):>7} {_mean([v.estimate.accuracy for v in rows]):>8} "
                    f"{np.mean([abs(v.estimate.accuracy - v.unseen) for v in rows]):>6.1%} "
                    f"{np.mean([v.estimate.low <= v.unseen <= v.estimate.high for v in rows]):>7.0%} "
                    f"{np.mean([abs(v.estimate.naive_accuracy - v.unseen) for v in rows]):>9.1%} "
                    f"{_mean(holdout_mae) if holdout_mae else '-':>11}")
        last = [v for v in weighed if v.n_train == n_labels and v.arm == "sampled"]
        if last:
            out.append(f"sampled at {n_labels} labels: weighted MAE {np.mean([abs(v.estimate.accuracy - v.unseen) for v in last]):.1%} "
                       f"(goal <= 3 points), mean interval width "
                       f"{np.mean([v.estimate.high - v.estimate.low for v in last]):.1%}; holdout interval width "
                       f"{np.mean([v.holdout[2] - v.holdout[1] for v in last if v.holdout]):.1%}")
    out.append("\n3. Label efficiency: accuracy on the unseen images by training labels (mean over seeds)")
    out.append(f"{'train labels':>12} " + " ".join(f"{arm:>8}" for arm in arms))
    for n in counts:
        out.append(f"{n:>12} " + " ".join(f"{_mean([v.unseen for v in versions if v.arm == arm and v.n_train == n]):>8}"
                                          for arm in arms))
    out.append("\n4. The holdout's cost (top-k arm): labels on it, and accuracy at the same total labels")
    topk = [v for v in versions if v.arm == "top-k"]
    if topk:
        at_end = [v for v in topk if v.n_train == n_labels]
        out.append(f"at {n_labels} training labels the holdout holds {np.mean([v.n_holdout for v in at_end]):.0f} labels "
                   f"({np.mean([v.n_holdout / (v.n_holdout + v.n_train) for v in at_end]):.0%} of all labels)")
        split = []
        for seed in seeds:
            fitting = [v for v in topk if v.seed == seed and v.n_train + v.n_holdout <= n_labels]
            if fitting:
                split.append(max(fitting, key=lambda v: v.n_train))
        if split and at_end:
            out.append(f"{n_labels} labels in all, the service's split ({np.mean([v.n_train for v in split]):.0f} training + "
                       f"{np.mean([v.n_holdout for v in split]):.0f} holdout): unseen accuracy {_mean([v.unseen for v in split])}; "
                       f"all {n_labels} on training (the demo's free holdout): {_mean([v.unseen for v in at_end])}")
    return "\n".join(out)


def make_head_of(name: str):
    """A seeded head factory: ``softmax`` the plain head, ``semi`` the service's semi-supervised one."""
    from learner.head import SoftmaxHead
    from learner.semi import SemiSupervisedHead

    head_class = SemiSupervisedHead if name == "semi" else SoftmaxHead
    return lambda seed: head_class(random_state=seed)


def offline_efficiency(data, make_head, seeds: list[int], n_labels: int, batch: int) -> int:
    """Label efficiency of sampled picks with learner.offline's loop: top-k and sampled on the same seeds."""
    from learner.offline import run_offline

    X, y = data[0], data[1]
    semi = hasattr(make_head(0), "max_unlabelled")
    started = time.perf_counter()
    for sampled in (False, True):
        result = run_offline(X, y, make_head, strategies=["auto"], seeds=seeds, start_per_class=0, n_labels=n_labels,
                             batch=batch, semi_supervised=semi, sampled=sampled, with_random=not sampled)
        print(f"\nauto {'sampled' if sampled else 'top-k'} (seeds {seeds}; {time.perf_counter() - started:.0f} s; "
              f"load average {os.getloadavg()[0]:.1f})")
        print(result.table(checkpoints=tuple(range(batch, n_labels + 1, batch))))
    return 0


def seed_list(text: str) -> list[int]:
    first, _, last = text.partition("-")
    return list(range(int(first), int(last or first) + 1))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0-4")
    parser.add_argument("--labels", type=int, default=200, help="training labels at the end of every run")
    parser.add_argument("--pool-per-class", type=int, default=400)
    parser.add_argument("--arms", default="top-k,sampled,random")
    parser.add_argument("--head", choices=["softmax", "semi"], default="softmax",
                        help="softmax: the plain head (fast; the default for a run on a shared machine); semi: the "
                        "service's semi-supervised head (about 15 s a fit on a busy 2-core machine, 6 fits a version)")
    parser.add_argument("--offline", action="store_true", help="only label efficiency, with learner.offline's loop "
                        "(its 10%% holdout of the pool, from no label as the service): auto top-k vs auto sampled, random beside")
    parser.add_argument("--smoke", action="store_true", help="synthetic vectors, 2 seeds, 40 labels: seconds")
    args = parser.parse_args(argv)
    from tqdm import tqdm

    from config.settings import HoldoutSettings, ServiceSettings

    service = ServiceSettings()
    holdout_settings = HoldoutSettings()
    batch, n_labels, seeds = service.review_batch_size, args.labels, seed_list(args.seeds)
    if args.smoke:
        data = smoke_split()
        batch, n_labels, seeds = 10, 40, [0, 1]
        holdout_settings = HoldoutSettings(min_labels=10)
    else:
        data = fashion_split(args.pool_per_class)
    if args.offline:
        return offline_efficiency(data, make_head_of(args.head), seeds, n_labels, batch)
    arms = args.arms.split(",")
    make_head = make_head_of(args.head)
    started = time.perf_counter()
    versions = []
    with tqdm(total=len(seeds) * len(arms), desc="seed x arm", disable=args.smoke) as bar:
        for seed in seeds:
            for arm in arms:
                versions += run_arm(arm, seed, data, make_head, n_labels, batch, holdout_settings)
                bar.update(1)
    print(f"pool {len(data[1])}, unseen {len(data[3])}, batch {batch}, holdout {holdout_settings.target_size(len(np.unique(data[1])))} "
          f"reserved (min_labels {holdout_settings.min_labels}, share {holdout_settings.share}); "
          f"{args.head} head; {time.perf_counter() - started:.0f} s")
    print(tables(versions, n_labels))
    return 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["--embed-only"]:  # fill the embedding cache ahead of a run
        fashion_split(int(sys.argv[2]))
        sys.exit(0)
    sys.exit(main())
