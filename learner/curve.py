"""The data-size curve: holdout accuracy against the number of labels, on embeddings.

For each seed ``s`` (one independent replicate of the whole experiment):

1. hold out ``holdout_fraction`` (10%) of every class, chosen at random with seed ``s``
   (at least one item per class is held out, and at least one is left to train on);
2. for each budget, pick training items at random (seed ``s``) from the rest, *stratified by class*:
   ``1/class`` and ``3/class`` take that many per class; ``5%`` ... ``100%`` take that share of each
   class's remaining items (rounded, at least one per class), so a budget never misses a class by bad
   luck and ``n_labels`` is the same for every seed;
3. fit a fresh head on those items' embeddings (plus their augmented copies, if given; with
   ``unlabelled_pool``, plus the rest of the pool marked ``-1`` for a semi-supervised head, never the
   holdout) and score argmax accuracy, and the threshold figures of :func:`learner.metrics.evaluate`, on
   the holdout.

Every image is embedded once, before this module is called: the functions here take arrays only, so the
13 budgets x N seeds cost head fits and nothing else. :func:`run_curve` returns a :class:`CurveResult`;
:meth:`CurveResult.to_dict` is what ``curve.json`` holds.
"""

from __future__ import annotations

import csv
import io
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from learner.metrics import evaluate
from learner.rules import proba_in_order
from learner.sampling import stratified_split
from learner.study import STUDY_POINTS

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Budget:
    """A training-set size: ``per_class`` items of every class, or a ``fraction`` of every class's pool."""

    name: str
    per_class: int | None = None
    fraction: float | None = None

    def __post_init__(self) -> None:
        if (self.per_class is None) == (self.fraction is None):
            raise ValueError(f"budget {self.name!r}: give exactly one of per_class and fraction")
        if self.per_class is not None and self.per_class < 1:
            raise ValueError(f"budget {self.name!r}: per_class must be >= 1")
        if self.fraction is not None and not 0 < self.fraction <= 1:
            raise ValueError(f"budget {self.name!r}: fraction must be within (0, 1]")

    def count(self, available: int) -> int:
        """How many of a class's ``available`` pool items this budget takes (at least 1, at most all)."""
        if self.per_class is not None:
            wanted = self.per_class
        else:
            wanted = int(np.floor(self.fraction * available + 0.5))
        return int(min(max(wanted, 1), available))


DEFAULT_BUDGETS: tuple[Budget, ...] = (
    Budget("1/class", per_class=1),
    Budget("3/class", per_class=3),
    Budget("5%", fraction=0.05),
    *(Budget(f"{p}%", fraction=p / 100) for p in range(10, 101, 10)),
)

def holdout_split(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Split row numbers into (pool, holdout), holding out ``fraction`` of every class at random."""
    if not 0 < fraction < 1:
        raise ValueError(f"holdout fraction must be within (0, 1), got {fraction}")
    labels = np.asarray(labels)
    values, counts = np.unique(labels, return_counts=True)
    if (counts < 2).any():
        label, count = values[counts < 2][0], counts[counts < 2][0]
        raise ValueError(
            f"class {label!r} has {count} image(s); the curve needs at least 2 per class "
            "(one to hold out, one to train on)"
        )
    holdout, pool = stratified_split(labels, lambda n: min(max(int(np.floor(fraction * n + 0.5)), 1), n - 1), seed)
    return pool, holdout


def budget_picks(labels: np.ndarray, pool: np.ndarray, budget: Budget, seed: int) -> np.ndarray:
    """Row numbers (from ``pool``) to train on for ``budget``: a random stratified pick, seeded."""
    return stratified_split(labels, budget.count, seed, rows=pool)[0]


@dataclass
class BudgetResult:
    """One budget's holdout figures over the seeds."""

    budget: str
    n_labels: int
    labels_per_class: float
    accuracies: list[float]
    thresholds: list[dict[str, Any]]

    @property
    def accuracy_mean(self) -> float:
        return float(np.mean(self.accuracies))

    def to_dict(self) -> dict[str, Any]:
        return {
            "budget": self.budget,
            "n_labels": self.n_labels,
            "labels_per_class": self.labels_per_class,
            "accuracy_mean": self.accuracy_mean,
            "accuracy_min": float(np.min(self.accuracies)),
            "accuracy_max": float(np.max(self.accuracies)),
            "accuracy_std": float(np.std(self.accuracies)),
            "accuracies": list(self.accuracies),
            "thresholds": self.thresholds,
        }


@dataclass
class CurveResult:
    """The whole curve; ``to_dict()`` is the ``curve.json`` document."""

    dataset: str
    backbone: str
    n_images: int
    class_names: list[str]
    seeds: list[int]
    holdout_fraction: float
    augment: int
    budgets: list[BudgetResult]
    timing: dict[str, float] = field(default_factory=dict)
    head: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset,
            "backbone": self.backbone,
            "n_images": self.n_images,
            "n_classes": len(self.class_names),
            "class_names": list(self.class_names),
            "seeds": list(self.seeds),
            "holdout_fraction": self.holdout_fraction,
            "augment": self.augment,
            "head": self.head,
            "budgets": [b.to_dict() for b in self.budgets],
            "timing": dict(self.timing),
            "study": [point.to_dict() for point in STUDY_POINTS],
        }

    def to_csv(self) -> str:
        """One row per budget: name, labels, mean/min/max/std accuracy, then one column per seed."""
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(
            ["budget", "n_labels", "labels_per_class", "accuracy_mean", "accuracy_min", "accuracy_max",
             "accuracy_std", *(f"accuracy_seed_{s}" for s in self.seeds)]
        )
        for b in self.budgets:
            d = b.to_dict()
            writer.writerow(
                [b.budget, b.n_labels, f"{b.labels_per_class:.4g}", *(f"{d[k]:.6f}" for k in
                 ("accuracy_mean", "accuracy_min", "accuracy_max", "accuracy_std")),
                 *(f"{a:.6f}" for a in b.accuracies)]
            )
        return out.getvalue()

    def table(self, baseline: dict[str, float] | None = None) -> str:
        """A plain-text table for people; with ``baseline`` (budget -> accuracy), a comparison column."""
        header = f"{'budget':>8} {'labels':>7} {'/class':>7} {'mean':>7} {'min':>7} {'max':>7}"
        if baseline:
            header += f" {'baseline':>9} {'diff':>7}"
        lines = [header]
        for b in self.budgets:
            d = b.to_dict()
            line = (f"{b.budget:>8} {b.n_labels:>7d} {b.labels_per_class:>7.4g} {d['accuracy_mean']:>7.1%} "
                    f"{d['accuracy_min']:>7.1%} {d['accuracy_max']:>7.1%}")
            if baseline:
                if b.budget in baseline:
                    diff = d["accuracy_mean"] - baseline[b.budget]
                    line += f" {baseline[b.budget]:>9.1%} {diff * 100:>+6.1f}pp"
                else:
                    line += f" {'':>9} {'':>7}"
            lines.append(line)
        return "\n".join(lines)


def run_curve(
    embeddings: np.ndarray,
    labels: np.ndarray,
    make_head: Callable[[int], Any],
    *,
    seeds: Sequence[int] = (0,),
    budgets: Sequence[Budget] = DEFAULT_BUDGETS,
    holdout_fraction: float = 0.1,
    augmented: np.ndarray | None = None,
    thresholds: Sequence[float] = (0.5, 0.8),
    progress: Callable[[int], None] | None = None,
    dataset: str = "",
    backbone: str = "",
    class_names: Sequence[str] | None = None,
    unlabelled_pool: bool = False,
) -> CurveResult:
    """Fit ``make_head(seed)`` for every budget and seed on ``embeddings`` (n, d) and score the holdouts.

    ``augmented``, if given, is (n, K, d): embeddings of K augmented copies of every image; the copies of
    the picked training images join their originals (holdout images are never augmented or trained on).
    ``progress(1)`` is called after every fit (for a progress bar). ``timing["train_s"]`` is the wall time
    spent in ``fit`` alone, ``timing["train_cpu_s"]`` the CPU time of this process meanwhile (all threads: on
    a busy machine it shows what the fits cost regardless of what else runs).
    """
    embeddings = np.asarray(embeddings, dtype=np.float32)
    labels = np.asarray(labels)
    if embeddings.ndim != 2 or len(embeddings) != len(labels):
        raise ValueError(f"embeddings {embeddings.shape} and labels ({len(labels)},) do not match")
    if augmented is not None and (augmented.ndim != 3 or augmented.shape[0] != len(labels)
                                  or augmented.shape[2] != embeddings.shape[1]):
        raise ValueError(f"augmented must be (n, K, {embeddings.shape[1]}), got {augmented.shape}")
    if not seeds:
        raise ValueError("give at least one seed")
    classes = np.unique(labels)
    names = list(class_names) if class_names is not None else [str(c) for c in classes]

    train_s = train_cpu_s = 0.0
    accuracies: dict[str, list[float]] = {b.name: [] for b in budgets}
    n_labels: dict[str, list[int]] = {b.name: [] for b in budgets}
    figures: dict[str, list[list[tuple[float, float | None, float]]]] = {b.name: [] for b in budgets}
    head_params: dict[str, Any] = {}
    started = time.perf_counter()
    for seed in seeds:
        pool, holdout = holdout_split(labels, holdout_fraction, seed)
        for budget in budgets:
            picks = budget_picks(labels, pool, budget, seed)
            X, y = embeddings[picks], labels[picks]
            if augmented is not None:
                X = np.concatenate([X, augmented[picks].reshape(-1, embeddings.shape[1])])
                y = np.concatenate([y, np.repeat(y, augmented.shape[1])])
            if unlabelled_pool:
                rest = np.setdiff1d(pool, picks)
                X = np.concatenate([X, embeddings[rest]])
                y = np.concatenate([y, np.full(len(rest), -1, dtype=y.dtype)])
            head = make_head(seed)
            fit_started, fit_cpu_started = time.perf_counter(), time.process_time()
            head.fit(X, y)
            train_s += time.perf_counter() - fit_started
            train_cpu_s += time.process_time() - fit_cpu_started
            head_params = {"class": type(head).__name__, **_params(head)}
            proba = proba_in_order(head, embeddings[holdout], classes)
            evaluation = evaluate(labels[holdout], proba, classes, thresholds)
            accuracies[budget.name].append(evaluation.accuracy)
            n_labels[budget.name].append(len(picks))
            figures[budget.name].append(
                [(t.coverage, t.selective_accuracy, t.p_true_above) for t in evaluation.thresholds]
            )
            logger.debug("seed %d budget %s: %d labels, accuracy %.4f", seed, budget.name, len(picks),
                         evaluation.accuracy)
            if progress is not None:
                progress(1)

    results = []
    for budget in budgets:
        counts = n_labels[budget.name]
        results.append(
            BudgetResult(
                budget=budget.name,
                n_labels=int(round(np.mean(counts))),
                labels_per_class=float(np.mean(counts)) / len(classes),
                accuracies=accuracies[budget.name],
                thresholds=_threshold_summary(thresholds, figures[budget.name]),
            )
        )
    return CurveResult(
        dataset=dataset,
        backbone=backbone,
        n_images=len(labels),
        class_names=names,
        seeds=list(seeds),
        holdout_fraction=holdout_fraction,
        augment=0 if augmented is None else int(augmented.shape[1]),
        budgets=results,
        timing={"train_s": train_s, "train_cpu_s": train_cpu_s, "curve_s": time.perf_counter() - started},
        head=head_params,
    )


def _params(estimator: Any) -> dict[str, Any]:
    get_params = getattr(estimator, "get_params", None)
    if get_params is None:
        return {}
    # random_state differs per seed and the seeds are listed on their own.
    return {k: v for k, v in get_params().items()
            if k != "random_state" and isinstance(v, (int, float, str, bool, type(None)))}


def _threshold_summary(
    thresholds: Sequence[float], per_seed: list[list[tuple[float, float | None, float]]]
) -> list[dict[str, Any]]:
    summary = []
    for j, t in enumerate(thresholds):
        coverage = [seed_figures[j][0] for seed_figures in per_seed]
        selective = [seed_figures[j][1] for seed_figures in per_seed if seed_figures[j][1] is not None]
        p_true = [seed_figures[j][2] for seed_figures in per_seed]
        summary.append({
            "threshold": float(t),
            "coverage_mean": float(np.mean(coverage)),
            "selective_accuracy_mean": float(np.mean(selective)) if selective else None,
            "p_true_above_mean": float(np.mean(p_true)),
        })
    return summary


FORECAST_FIT_BUDGETS = ("1/class", "3/class", "5%", "10%")
FORECAST_PREDICT_BUDGETS = ("20%", "50%", "100%")


def _forecast_budgets(points: list[tuple[str, int, float]], predict: list[tuple[str, int, float]], n_holdout: int,
                      **options: Any) -> dict[str, Any]:
    from learner.forecast import Point, fit_forecast

    forecast = fit_forecast([Point(n, accuracy, n_holdout) for _, n, accuracy in points], **options)
    budgets = {}
    for name, n, measured in predict:
        prediction = forecast.predict(n)
        budgets[name] = {"n_labels": n, "predicted": prediction.expected, "low": prediction.low,
                         "high": prediction.high, "measured": measured, "refused": prediction.refused}
    return {"fitted_on": [name for name, _, _ in points], "budgets": budgets,
            "backtest_error": forecast.backtest_error, "refused": forecast.refused, "family": forecast.family,
            "non_monotone": forecast.non_monotone}


def curve_forecast(
    result: CurveResult,
    n_holdout: int,
    fit_budgets: Sequence[str] = FORECAST_FIT_BUDGETS,
    predict_budgets: Sequence[str] = FORECAST_PREDICT_BUDGETS,
    **options: Any,
) -> dict[str, Any]:
    """The forecast fitted on the small budgets, checked against the large ones (``curve.json``'s ``forecast``).

    The headline fit uses the seed means (holdout size ``n_holdout`` x seeds); ``per_seed`` repeats it on
    every seed alone, and ``summary`` gives the mean absolute error per predicted budget and how often the
    band covered the measured value over all (seed, budget) pairs. ``options`` go to
    :func:`learner.forecast.fit_forecast` (``max_multiple``, ``backtest_tolerance``, ``band``, ...).
    """
    by_name = {b.budget: b for b in result.budgets}
    missing = [name for name in (*fit_budgets, *predict_budgets) if name not in by_name]
    if missing:
        raise ValueError(f"the curve has no budget(s) {', '.join(missing)}")
    fit = [by_name[name] for name in fit_budgets]
    predict = [by_name[name] for name in predict_budgets]
    document = _forecast_budgets([(b.budget, b.n_labels, b.accuracy_mean) for b in fit],
                                 [(b.budget, b.n_labels, b.accuracy_mean) for b in predict],
                                 n_holdout * len(result.seeds), **options)
    per_seed = []
    for i, seed in enumerate(result.seeds):
        one = _forecast_budgets([(b.budget, b.n_labels, b.accuracies[i]) for b in fit],
                                [(b.budget, b.n_labels, b.accuracies[i]) for b in predict], n_holdout, **options)
        per_seed.append({"seed": seed, **one})
    document["per_seed"] = per_seed
    errors: dict[str, list[float]] = {name: [] for name in predict_budgets}
    covered = []
    for one in per_seed:
        for name, figures in one["budgets"].items():
            if figures["predicted"] is None:
                continue
            errors[name].append(abs(figures["predicted"] - figures["measured"]))
            covered.append(figures["low"] <= figures["measured"] <= figures["high"])
    document["summary"] = {
        "seeds_refused": sum(one["refused"] is not None for one in per_seed),
        "mean_abs_error": {name: float(np.mean(e)) if e else None for name, e in errors.items()},
        "max_abs_error": {name: float(np.max(e)) if e else None for name, e in errors.items()},
        "band_coverage": float(np.mean(covered)) if covered else None,
        "band_cases": len(covered),
    }
    return document


def forecast_table(document: dict[str, Any]) -> str:
    """Predicted beside measured, for people (the ``forecast`` member of ``curve.json``)."""
    fitted = ", ".join(document["fitted_on"])
    lines = [f"forecast fitted on {fitted} ({document['family'] or 'no family'}); backtest error "
             + ("-" if document["backtest_error"] is None else f"{document['backtest_error']:.1%}")]
    if document["refused"]:
        lines.append(f"  refused: {document['refused']}")
    lines.append(f"{'budget':>8} {'labels':>7} {'predicted':>10} {'80% band':>15} {'measured':>9} {'error':>7}")
    for name, b in document["budgets"].items():
        if b["predicted"] is None:
            lines.append(f"{name:>8} {b['n_labels']:>7d} {'-':>10} {'-':>15} {b['measured']:>9.1%}   ({b['refused']})")
            continue
        band = f"{b['low']:.1%}-{b['high']:.1%}"
        lines.append(f"{name:>8} {b['n_labels']:>7d} {b['predicted']:>10.1%} {band:>15} {b['measured']:>9.1%} "
                     f"{(b['predicted'] - b['measured']) * 100:>+6.1f}pp")
    summary = document.get("summary")
    if summary and len(document.get("per_seed", [])) > 1:
        errors = ", ".join(f"{k} {v * 100:.1f}pp" for k, v in summary["mean_abs_error"].items() if v is not None)
        coverage = "-" if summary["band_coverage"] is None else f"{summary['band_coverage']:.0%}"
        lines.append(f"per seed: mean |error| {errors}; 80% band covered {coverage} of {summary['band_cases']} "
                     f"(seed, budget) pairs; {summary['seeds_refused']} seed(s) refused")
    return "\n".join(lines)
