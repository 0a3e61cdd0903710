"""The label checks' cost beside the retrain they follow: one head fit vs out-of-fold probabilities + cleanlab.

    PYTHONPATH=$PWD .venv/bin/python benchmarks/label_checks.py [--sizes 500 2000 6000] [--dim 1280] [--smoke]

Stand-in embeddings (Gaussian class clusters at EfficientNet-Lite0's width, 10 classes, 10% of labels flipped):
the cost depends on the shape, not the pixels. Each size times, in the same run, one fit of the service's default
head (what a retrain pays), the checks' out-of-fold probabilities (five fresh heads, :mod:`learner.oof`) and
cleanlab's suspects (:func:`learner.label_issues.find_suspects`), and prints the ratio of checks to fit. The
checks run in their own scheduler job (``check-labels``) because they cost several fits.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> int:
    import numpy as np

    from app.core.checks import check_head_factory
    from app.core.training import default_head_factory
    from learner.label_issues import find_suspects
    from learner.oof import out_of_fold_proba

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[500, 2000, 6000])
    parser.add_argument("--dim", type=int, default=1280)
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes (seconds): check that the benchmark runs")
    args = parser.parse_args()
    if args.smoke:
        args.sizes, args.dim = [200], 64
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(args.classes, args.dim)).astype(np.float32)
    warm = rng.normal(size=(50, args.dim)).astype(np.float32)
    default_head_factory(None).fit(warm, np.arange(50) % args.classes)  # TensorFlow's start-up and tracing, untimed
    print(f"load {os.getloadavg()[0]:.1f} (2 cores, shared); dim {args.dim}, {args.classes} classes, 10% labels flipped")
    print(f"{'labels':>7} {'fit s':>7} {'oof s':>7} {'cleanlab s':>11} {'checks/fit':>11} {'precision':>10} {'recall':>7}")
    for size in args.sizes:
        y_true = rng.integers(0, args.classes, size)
        X = (centres[y_true] * 0.35 + rng.normal(size=(size, args.dim))).astype(np.float32)
        y = y_true.copy()
        flipped = rng.random(size) < 0.1
        y[flipped] = (y[flipped] + rng.integers(1, args.classes, flipped.sum())) % args.classes
        started = time.perf_counter()
        default_head_factory(None).fit(X, y)
        fit_s = time.perf_counter() - started
        started = time.perf_counter()
        proba = out_of_fold_proba(check_head_factory, X, y, args.classes)
        oof_s = time.perf_counter() - started
        started = time.perf_counter()
        suspects = find_suspects(y, proba)
        cleanlab_s = time.perf_counter() - started
        found = set(suspects.indices.tolist())
        truth = set(np.flatnonzero(flipped).tolist())
        precision = len(found & truth) / max(len(found), 1)
        recall = len(found & truth) / max(len(truth), 1)
        print(f"{size:>7} {fit_s:>7.2f} {oof_s:>7.2f} {cleanlab_s:>11.2f} {(oof_s + cleanlab_s) / fit_s:>11.1f} "
              f"{precision:>10.1%} {recall:>7.1%}")
    print(f"load {os.getloadavg()[0]:.1f} at the end")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
