"""Issue 2's "Must measure": the data-size curve on Fashion-MNIST, from a cold embedding cache.

    .venv/bin/python benchmarks/curve.py [--per-class-limit 700] [--seeds 3] [--keep DIR] [--smoke]

Runs ``juicer curve --dataset fashion-mnist --per-class-limit 700 --seeds 3`` (EfficientNet-Lite0 at 224)
with a fresh data folder in a temporary directory (the converted backbone is linked in from the real data
folder, building it there first if needed, outside the timing: it is a one-off set-up, not part of a run),
then prints:

- the curve table against the baseline measured on these machines (plain softmax head, random picks);
- wall time split into embedding and head training, against the issue's limits (150 s whole run from a
  cold cache, 30 s for the 39 head fits);
- an in-run baseline: a plain softmax head (scikit-learn's LogisticRegression, lbfgs, C=1, on the raw
  embeddings) trained on the same picks and scored on the same holdouts, for the baseline's budgets and the
  same seeds; fit time and accuracy side by side, so the comparison does not depend on a figure measured
  on another day.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

BASELINE = {"1/class": 0.578, "3/class": 0.717, "5%": 0.837, "10%": 0.851, "50%": 0.862, "100%": 0.882}
LIMIT_TOTAL_S = 150.0
LIMIT_TRAIN_S = 30.0
COMPARE_BUDGETS = tuple(BASELINE)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-class-limit", type=int, default=700)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--backbone", default="efficientnet-lite0")
    parser.add_argument("--keep", type=Path, default=None, help="also copy curve.json/csv/png here")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes (seconds): check that the benchmark runs")
    args = parser.parse_args()
    if args.smoke:
        args.per_class_limit, args.seeds = 20, 1

    from app.cli.main import main as juicer
    from config import load_settings
    from learner.backbones import backbone_dir, ensure_backbone

    settings = load_settings()
    real_backbone, built = ensure_backbone(args.backbone, settings.data_dir)
    if built:
        print(f"(built {args.backbone} into {real_backbone} first; not timed)")

    with tempfile.TemporaryDirectory(prefix="juicer-bench-") as tmp:
        data_dir = Path(tmp) / "data"
        linked = backbone_dir(args.backbone, data_dir)
        linked.parent.mkdir(parents=True)
        linked.symlink_to(real_backbone.resolve(), target_is_directory=True)
        out_dir = Path(tmp) / "out"
        os.environ["JUICER_DATA_DIR"] = str(data_dir)

        started = time.perf_counter()
        rc = juicer(["curve", "--dataset", "fashion-mnist", "--per-class-limit", str(args.per_class_limit),
                     "--seeds", str(args.seeds), "--backbone", args.backbone, "--out", str(out_dir)])
        wall_s = time.perf_counter() - started
        if rc != 0:
            print(f"juicer curve failed with exit status {rc}", file=sys.stderr)
            return rc
        document = json.loads((out_dir / "curve.json").read_text())
        comparison, many_seeds = _compare_with_logistic_regression(args, data_dir)
        if args.keep:
            args.keep.mkdir(parents=True, exist_ok=True)
            for name in ("curve.json", "curve.csv", "curve.png"):
                (args.keep / name).write_bytes((out_dir / name).read_bytes())

    _report(document, wall_s, comparison, many_seeds)
    return 0


def _compare_with_logistic_regression(args: argparse.Namespace, data_dir: Path) -> tuple[list[dict], dict]:
    """Our head against scikit-learn's LogisticRegression on the same rows (embeddings from the warm cache)."""
    import numpy as np
    from sklearn.linear_model import LogisticRegression

    from config import load_settings
    from learner.backbones import load_backbone, resolve_backbone
    from learner.cache import EmbeddingCache, embed_sources
    from learner.curve import DEFAULT_BUDGETS, budget_picks, holdout_split
    from learner.datasets import load_fashion_mnist
    from learner.head import SoftmaxHead

    settings = load_settings(data_dir=data_dir)
    dataset = load_fashion_mnist(settings.fashion_mnist_dir, per_class_limit=args.per_class_limit, seed=0)
    spec = resolve_backbone(args.backbone, data_dir)
    backbone = load_backbone(spec, batch_size=settings.learner.batch_size)
    with EmbeddingCache(data_dir / "embeddings", backbone.id) as cache:
        X = embed_sources(backbone, cache, dataset.sources, progress=False)  # all cached: no backbone calls
    if backbone.calls:
        print(f"warning: the comparison re-ran the backbone {backbone.calls} times (cache miss?)")
    y = dataset.labels
    totals: dict[str, dict] = {}
    for seed in range(args.seeds):
        pool, holdout = holdout_split(y, 0.1, seed=seed)
        for budget in DEFAULT_BUDGETS:
            if budget.name not in COMPARE_BUDGETS:
                continue
            picks = budget_picks(y, pool, budget, seed=seed)
            head = SoftmaxHead(random_state=seed)
            t0 = time.perf_counter()
            head.fit(X[picks], y[picks])
            head_s = time.perf_counter() - t0
            lr = LogisticRegression(max_iter=1000)  # the plain softmax head: raw embeddings, defaults
            t0 = time.perf_counter()
            lr.fit(X[picks], y[picks])
            lr_s = time.perf_counter() - t0
            row = totals.setdefault(budget.name, {"budget": budget.name, "n_labels": len(picks), "head_s": 0.0,
                                                  "lr_s": 0.0, "head_acc": [], "lr_acc": []})
            row["head_s"] += head_s
            row["lr_s"] += lr_s
            row["head_acc"].append(float((head.predict(X[holdout]) == y[holdout]).mean()))
            row["lr_acc"].append(float((lr.predict(X[holdout]) == y[holdout]).mean()))
    rows = [{**r, "head_acc": float(np.mean(r["head_acc"])), "lr_acc": float(np.mean(r["lr_acc"]))}
            for r in totals.values()]
    return rows, _small_budgets_over_many_seeds(X, y, 2 if args.smoke else 20)


def _small_budgets_over_many_seeds(X, y, n_seeds: int = 20) -> dict[str, list[float]]:
    """1 and 3 labels per class over seeds 0..n_seeds-1: how much of a 3-seed mean is the luck of the picks."""
    from learner.curve import DEFAULT_BUDGETS, budget_picks, holdout_split
    from learner.head import SoftmaxHead

    accuracies: dict[str, list[float]] = {"1/class": [], "3/class": []}
    for seed in range(n_seeds):
        pool, holdout = holdout_split(y, 0.1, seed)
        for budget in DEFAULT_BUDGETS:
            if budget.name in accuracies:
                picks = budget_picks(y, pool, budget, seed)
                head = SoftmaxHead(random_state=seed).fit(X[picks], y[picks])
                accuracies[budget.name].append(float((head.predict(X[holdout]) == y[holdout]).mean()))
    return accuracies


def _report(document: dict, wall_s: float, comparison: list[dict], many_seeds: dict[str, list[float]]) -> None:
    print("\n== juicer curve benchmark:", f"{document['dataset']}, {document['n_images']} images,",
          f"{document['backbone']}, {len(document['seeds'])} seeds ==")
    print(f"{'budget':>8} {'labels':>7} {'mean':>7} {'min':>7} {'max':>7} {'baseline':>9} {'diff':>8}")
    for b in document["budgets"]:
        line = (f"{b['budget']:>8} {b['n_labels']:>7} {b['accuracy_mean']:>7.1%} {b['accuracy_min']:>7.1%} "
                f"{b['accuracy_max']:>7.1%}")
        if b["budget"] in BASELINE:
            base = BASELINE[b["budget"]]
            verdict = "ok" if b["accuracy_mean"] >= base else "BELOW"
            line += f" {base:>9.1%} {100 * (b['accuracy_mean'] - base):>+6.1f}pp {verdict}"
        print(line)
    timing = document["timing"]
    n_fits = len(document["budgets"]) * len(document["seeds"])
    print(f"\nwall time (whole command, cold embedding cache): {wall_s:6.1f} s   limit {LIMIT_TOTAL_S:.0f} s "
          f"{'ok' if wall_s <= LIMIT_TOTAL_S else 'OVER'}")
    print(f"  embedding {document['n_images']} images:            {timing['embed_s']:6.1f} s   "
          f"({document['n_images'] / max(timing['embed_s'], 1e-9):.0f} images/s)")
    print(f"  {n_fits} head fits:                       {timing['train_s']:6.1f} s   limit {LIMIT_TRAIN_S:.0f} s "
          f"{'ok' if timing['train_s'] <= LIMIT_TRAIN_S else 'OVER'}")
    print(f"    (CPU time of those fits, both cores together: {timing.get('train_cpu_s', float('nan')):.1f} s; "
          f"load average at the end: {', '.join(f'{x:.1f}' for x in os.getloadavg())})")
    print(f"  the rest (imports, data, backbone load, scoring, files): "
          f"{wall_s - timing['embed_s'] - timing['train_s']:.1f} s")
    print(f"  device: {document.get('device', '?')}")
    if comparison:
        print("\nin-run baseline: a plain softmax head (LogisticRegression, lbfgs, C=1, raw embeddings) on the same "
              "picks and holdouts; fit seconds summed and accuracy averaged over the same seeds:")
        print(f"{'budget':>8} {'labels':>7} {'head s':>8} {'LR s':>8} {'LR/head':>8} {'head acc':>9} {'LR acc':>8} {'diff':>8}")
        for r in comparison:
            print(f"{r['budget']:>8} {r['n_labels']:>7} {r['head_s']:>8.2f} {r['lr_s']:>8.2f} "
                  f"{r['lr_s'] / max(r['head_s'], 1e-9):>7.1f}x {r['head_acc']:>9.1%} {r['lr_acc']:>8.1%} "
                  f"{100 * (r['head_acc'] - r['lr_acc']):>+6.1f}pp")

    if many_seeds:
        print("\nsmall budgets over more seeds (same protocol; the picks decide most of a 3-seed mean):")
        for name, values in many_seeds.items():
            print(f"{name:>8}: mean {sum(values) / len(values):.1%} over {len(values)} seeds, "
                  f"min {min(values):.1%}, max {max(values):.1%}; first 3 seeds {sum(values[:3]) / 3:.1%}; "
                  f"baseline {BASELINE[name]:.1%}")


if __name__ == "__main__":
    sys.exit(main())
