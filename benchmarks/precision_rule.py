"""Issue 8's "Must measure": the ``precision`` rule on Fashion-MNIST, realised precision on images it never saw.

    .venv/bin/python benchmarks/precision_rule.py [--seeds 5] [--target 0.95] [--confidence 0.9] [--fresh 2000] [--smoke]

For every seed and budget (1/class, 3/class, 5%, 100%) it trains the curve's head on the picks of
``juicer curve`` (Fashion-MNIST, 700 per class, 10% holdout per seed), chooses the threshold on that holdout
with :func:`learner.selective.calibrate_precision_rule`, then applies it to a fresh sample of the idx
**test** split (t10k images that are not among the curve's 7,000) and prints coverage and realised
precision there, and how many runs kept the promise (goal: at least 90% of runs). A run where no
threshold keeps the promise sends everything to review: it is counted as kept (nothing was auto-accepted)
and listed apart. Embeddings come from the shared cache (``<data_dir>/embeddings``).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

BUDGETS = ("1/class", "3/class", "5%", "100%")


def _full(head, X, n_classes):
    """Probabilities with a zero column for any class the head never saw."""
    import numpy as np

    out = np.zeros((len(X), n_classes))
    out[:, np.asarray(head.classes_, dtype=np.int64)] = head.predict_proba(X)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--target", type=float, default=0.95)
    parser.add_argument("--confidence", type=float, default=0.9)
    parser.add_argument("--fresh", type=int, default=2000, help="fresh t10k images to measure on")
    parser.add_argument("--temperature", action="store_true", help="temperature scaling before the threshold")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes (seconds): check that the benchmark runs")
    args = parser.parse_args()
    if args.smoke:
        args.seeds, args.fresh = 1, 50

    import numpy as np

    from config import load_settings
    from learner.backbones import load_backbone, resolve_backbone
    from learner.cache import EmbeddingCache, embed_sources
    from learner.curve import DEFAULT_BUDGETS, budget_picks, holdout_split
    from learner.datasets import load_fashion_mnist
    from learner.head import SoftmaxHead
    from learner.selective import calibrate_precision_rule, temperature_scale

    settings = load_settings()
    curve_set = load_fashion_mnist(settings.fashion_mnist_dir, per_class_limit=30 if args.smoke else 700, seed=0)
    everything = load_fashion_mnist(settings.fashion_mnist_dir)
    used = set(curve_set.item_ids)
    test_rows = [i for i, item_id in enumerate(everything.item_ids) if "/t10k/" in item_id and item_id not in used]
    fresh_rows = np.random.default_rng(12345).choice(test_rows, size=args.fresh, replace=False)
    backbone = load_backbone(resolve_backbone(settings.learner.backbone, settings.data_dir), settings.learner.batch_size)
    with EmbeddingCache(settings.data_dir / "embeddings", backbone.id) as cache:
        X = embed_sources(backbone, cache, curve_set.sources, progress=False)
        X_fresh = embed_sources(backbone, cache, [everything.sources[i] for i in fresh_rows], progress=False)
    y, y_fresh = curve_set.labels, everything.labels[fresh_rows]
    budgets = {b.name: b for b in DEFAULT_BUDGETS}
    n_classes = len(curve_set.class_names)

    print(f"precision rule: target {args.target:.0%} with {args.confidence:.0%} confidence; holdout {len(y) // 10} (10%), "
          f"fresh t10k sample {args.fresh}; temperature scaling {'on' if args.temperature else 'off'}")
    print(f"{'budget':>8} {'seed':>4} {'threshold':>9} {'coverage':>9} {'precision':>9}  {'(holdout, cross-fitted)':>24}")
    kept = runs = no_threshold = 0
    summary = {}
    for name in BUDGETS:
        coverages, precisions = [], []
        for seed in range(args.seeds):
            pool, holdout = holdout_split(y, 0.1, seed)
            picks = budget_picks(y, pool, budgets[name], seed)
            head = SoftmaxHead(random_state=seed).fit(X[picks], y[picks])
            proba_holdout, proba_fresh = (_full(head, rows, n_classes) for rows in (X[holdout], X_fresh))
            promise = calibrate_precision_rule(proba_holdout, y[holdout], args.target, args.confidence,
                                               args.temperature, random_state=seed)
            runs += 1
            if promise.threshold is None:
                no_threshold += 1
                kept += 1
                print(f"{name:>8} {seed:>4} {'none':>9} {0:>9.1%} {'-':>9}  everything to review")
                coverages.append(0.0)
                continue
            scores = temperature_scale(proba_fresh, promise.temperature).max(axis=1)
            accepted = scores >= promise.threshold
            correct = proba_fresh.argmax(axis=1) == y_fresh
            precision = float(correct[accepted].mean()) if accepted.any() else None
            kept += precision is None or precision >= args.target
            coverages.append(float(accepted.mean()))
            if precision is not None:
                precisions.append(precision)
            cf = "-" if promise.cross_fitted_precision is None else f"{promise.cross_fitted_precision:.1%}"
            print(f"{name:>8} {seed:>4} {promise.threshold:>9.3f} {accepted.mean():>9.1%} "
                  f"{'-' if precision is None else f'{precision:.1%}':>9}  ({promise.coverage:.1%} covered, {cf})")
        summary[name] = (float(np.mean(coverages)), float(np.min(precisions)) if precisions else None,
                         float(np.mean(precisions)) if precisions else None)
    print()
    for name, (coverage, worst, mean) in summary.items():
        print(f"{name:>8}: mean coverage {coverage:.1%} on fresh images, realised precision mean "
              f"{'-' if mean is None else f'{mean:.1%}'}, worst {'-' if worst is None else f'{worst:.1%}'}")
    print(f"promise kept in {kept}/{runs} runs ({kept / runs:.0%}; goal >= 90%); {no_threshold} run(s) with no "
          "threshold (everything to review)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
