"""Two ``juicer simulate --offline`` runs side by side, paired by seed: did a change cost label efficiency?

``python -m simulate.compare BEFORE/simulate.json AFTER/simulate.json [--at 20,50,100]`` prints, for every
strategy both runs hold, the accuracy at a few label counts: each run's mean over seeds with a 95% interval
(Student's t), and the paired difference (after - before, per seed, then its mean and 95% interval), with how
many seeds went up, stayed and went down. Both runs must share seeds, start labels and batches (the same
holdout and start labels per seed), so a seed's two curves differ only by the change.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Interval:
    """A mean over seeds and its 95% interval's half-width (Student's t; 0 with a single seed)."""

    mean: float
    half_width: float
    n: int

    def text(self, scale: float = 100.0, signed: bool = False) -> str:
        """``72.4 +- 1.3`` in points (percent), ``+0.4 +- 0.9`` when ``signed``."""
        sign = "+" if signed else ""
        return f"{self.mean * scale:{sign}.1f} +- {self.half_width * scale:.1f}"


def mean_interval(values: Sequence[float], confidence: float = 0.95) -> Interval:
    """The mean of ``values`` and the half-width of its two-sided ``confidence`` interval (Student's t)."""
    from scipy.stats import t

    array = np.asarray(values, dtype=np.float64)
    if len(array) < 2:
        return Interval(float(array.mean()) if len(array) else math.nan, 0.0, len(array))
    spread = float(array.std(ddof=1)) / math.sqrt(len(array))
    return Interval(float(array.mean()), float(t.ppf(0.5 + confidence / 2, len(array) - 1)) * spread, len(array))


def _per_seed(document: Mapping[str, Any], strategy: str) -> tuple[list[int], np.ndarray]:
    entry = document["strategies"][strategy]
    if "accuracy_per_seed" not in entry:
        raise ValueError("the simulate.json has no per-seed accuracies (written before they were recorded); run it again")
    return list(entry["n_labels"]), np.asarray(entry["accuracy_per_seed"], dtype=np.float64)


def comparable(before: Mapping[str, Any], after: Mapping[str, Any]) -> str | None:
    """Why two simulate.json documents cannot be paired by seed, or None."""
    for key in ("seed_list", "start_per_class", "batch", "holdout_fraction", "n_images", "dataset", "per_class_limit"):
        if before["settings"].get(key) != after["settings"].get(key):
            return f"the runs differ in {key}: {before['settings'].get(key)!r} vs {after['settings'].get(key)!r}"
    return None


def compare(before: Mapping[str, Any], after: Mapping[str, Any], at: Sequence[int]) -> list[dict[str, Any]]:
    """One row per strategy both runs hold and label count in ``at`` they both reached: both runs' means and
    intervals, the paired difference's, and the seeds that went up / stayed / went down."""
    problem = comparable(before, after)
    if problem:
        raise ValueError(problem)
    rows = []
    for strategy in [name for name in before["strategies"] if name in after["strategies"]]:
        counts_before, acc_before = _per_seed(before, strategy)
        counts_after, acc_after = _per_seed(after, strategy)
        for n_labels in at:
            if n_labels not in counts_before or n_labels not in counts_after:
                continue
            a = acc_before[:, counts_before.index(n_labels)]
            b = acc_after[:, counts_after.index(n_labels)]
            difference = b - a
            rows.append({
                "strategy": strategy, "n_labels": n_labels,
                "before": mean_interval(a), "after": mean_interval(b), "difference": mean_interval(difference),
                "up": int((difference > 0).sum()), "same": int((difference == 0).sum()),
                "down": int((difference < 0).sum()),
            })
    return rows


def table(rows: Sequence[Mapping[str, Any]]) -> str:
    """The comparison as a Markdown table (points of accuracy, 95% intervals over seeds)."""
    lines = ["| strategy | labels | before (mean +- 95%) | after (mean +- 95%) | after - before, paired | seeds up / same / down |",
             "|---|---|---|---|---|---|"]
    for row in rows:
        lines.append(f"| {row['strategy']} | {row['n_labels']} | {row['before'].text()} | {row['after'].text()} "
                     f"| {row['difference'].text(signed=True)} | {row['up']} / {row['same']} / {row['down']} |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Print the paired comparison of two simulate.json files; 2 when they cannot be compared."""
    parser = argparse.ArgumentParser(prog="python -m simulate.compare", description=__doc__.splitlines()[0])
    parser.add_argument("before", type=Path, help="simulate.json of the run before the change")
    parser.add_argument("after", type=Path, help="simulate.json of the run after it")
    parser.add_argument("--at", default="20,50,100", metavar="N,N,...", help="label counts (default %(default)s)")
    args = parser.parse_args(argv)
    try:
        at = [int(value) for value in args.at.split(",") if value.strip()]
        before, after = (json.loads(path.read_text()) for path in (args.before, args.after))
        rows = compare(before, after, at)
    except (OSError, ValueError, KeyError) as exc:
        print(f"simulate.compare: {exc}", file=sys.stderr)
        return 2
    seeds = before["settings"].get("seed_list", [])
    print(f"{len(seeds)} seeds; accuracy in points, mean over seeds +- 95% interval (Student's t); "
          f"before: {before['settings'].get('pool_sample')}, after: {after['settings'].get('pool_sample')}")
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
