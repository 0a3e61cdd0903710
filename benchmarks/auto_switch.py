"""Measure where ``auto`` should switch from typical picks to diverse margin (tuning seeds, not reported ones).

    PYTHONPATH=$PWD .venv/bin/python benchmarks/auto_switch.py [--seeds 100-104] [--switch 1 2 3 5] [--labels 100]
        [--smoke]

The offline loop (learner.offline) on Fashion-MNIST 700/class EfficientNet-Lite0 embeddings (the shared
cache), the default semi-supervised head, a start of 1 random label per class and rounds of 10; ``auto`` is
run with each switch point (labels per class) and the mean holdout accuracy per round is printed, random
beside it. The rule kept in learner.query.AUTO_SWITCH_PER_CLASS is the switch with the best mean over rounds.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

import numpy as np  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="100-104")
    parser.add_argument("--switch", type=float, nargs="+", default=[1, 2, 3, 5])
    parser.add_argument("--labels", type=int, default=100)
    parser.add_argument("--start-per-class", type=int, default=1)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes (seconds): check that the benchmark runs")
    args = parser.parse_args()
    if args.smoke:
        args.seeds, args.switch, args.labels = "100", [1], 20  # one switch, two rounds: the code paths, not a figure
    from semi_head import fashion_embeddings, seed_range

    from learner.offline import run_offline
    from learner.semi import SemiSupervisedHead

    X, y = fashion_embeddings(per_class=15 if args.smoke else 700)
    seeds = seed_range(args.seeds)
    rows = {}
    started = time.perf_counter()
    for switch in args.switch:
        result = run_offline(X, y, lambda seed: SemiSupervisedHead(random_state=seed), strategies=["auto"], seeds=seeds,
                             start_per_class=args.start_per_class, n_labels=args.labels, batch=10,
                             with_random=switch == args.switch[0], query_params={"switch_per_class": switch})
        document = result.to_dict()["strategies"]
        rows[f"auto, switch at {switch:g}/class"] = document["auto"]
        if "random" in document:
            rows["random"] = document["random"]
        print(f"switch {switch:g} done ({time.perf_counter() - started:.0f} s)", flush=True)
    n_labels = next(iter(rows.values()))["n_labels"]
    print(f"\nseeds {seeds[0]}-{seeds[-1]}, start {args.start_per_class}/class; load {os.getloadavg()[0]:.1f}")
    print(f"{'':>26} " + " ".join(f"{n:>6}" for n in n_labels) + f" {'mean':>6}")
    for name, entry in rows.items():
        print(f"{name:>26} " + " ".join(f"{a:>6.1%}" for a in entry["accuracy_mean"])
              + f" {np.mean(entry['accuracy_mean']):>6.1%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
