"""The active-learning loop on embeddings, with the ground truth as the annotator: no Label Studio, no service.

For each seed ``s``: 10% of every class is held out (:func:`learner.curve.holdout_split`, seed ``s``), and
``start_per_class`` labels of every class are drawn at random from the rest (0: start from nothing). Every
strategy then starts from *the same* holdout and start labels; each round fits a fresh head on the labels
(plus, for a head that takes them, the unlabelled pool rows marked ``-1``; the holdout never), scores the
holdout, and asks the strategy for the next ``batch`` pool rows, whose true labels are then revealed.
``random`` is always run beside the others (active-learning gains over random are often small).
With ``sampled=True`` every strategy but ``random`` draws its batches from a proposal over its order
(:func:`learner.query.sampled_query`, the picks :mod:`learner.estimate` can weigh) instead of taking its top k.

:func:`run_offline` returns an :class:`OfflineResult`; :meth:`OfflineResult.to_dict` is ``simulate.json``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from learner.curve import Budget, budget_picks, holdout_split
from learner.rules import proba_in_order
from learner.query import STRATEGIES, query, sampled_query

logger = logging.getLogger(__name__)


@dataclass
class StrategyCurve:
    """One strategy's accuracy after every round, per seed (rows) and label count (columns)."""

    n_labels: list[int]
    accuracies: list[list[float]]  # [seed][round]

    def summary(self, full_data_accuracy: float) -> dict[str, Any]:
        """The ``simulate.json`` entry: means, 10th/90th percentiles and labels needed to reach targets."""
        acc = np.asarray(self.accuracies, dtype=np.float64)
        mean = acc.mean(axis=0)
        return {
            "n_labels": list(self.n_labels),
            "accuracy_mean": mean.tolist(),
            "accuracy_p10": np.percentile(acc, 10, axis=0).tolist(),
            "accuracy_p90": np.percentile(acc, 90, axis=0).tolist(),
            "labels_to_reach": {
                "0.85": _first_reaching(self.n_labels, mean, 0.85),
                "0.98_of_full": _first_reaching(self.n_labels, mean, 0.98 * full_data_accuracy),
            },
        }


def _first_reaching(n_labels: Sequence[int], mean: np.ndarray, target: float) -> int | None:
    reached = np.flatnonzero(mean >= target)
    return int(n_labels[reached[0]]) if len(reached) else None


@dataclass
class OfflineResult:
    """Every strategy's curve over the same seeds; ``to_dict()`` is the ``simulate.json`` document."""

    strategies: dict[str, StrategyCurve]
    full_data_accuracy: float
    seeds: int
    settings: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "strategies": {name: curve.summary(self.full_data_accuracy) for name, curve in self.strategies.items()},
            "full_data_accuracy": self.full_data_accuracy,
            "seeds": self.seeds,
            "settings": dict(self.settings),
        }

    def table(self, checkpoints: Sequence[int] = (20, 50, 100, 300)) -> str:
        """Accuracy at the checkpoints (the round at or just below each) and labels to 85% / 98% of full."""
        document = self.to_dict()
        first = next(iter(self.strategies.values()))
        shown = [c for c in checkpoints if first.n_labels and first.n_labels[0] <= c <= first.n_labels[-1]]
        if not shown and first.n_labels:  # a short run: its last round
            shown = [first.n_labels[-1]]
        header = f"{'strategy':>18} " + " ".join(f"{f'@{c}':>7}" for c in shown) + f" {'to 85%':>8} {'to 98% full':>12}"
        lines = [header]
        for name, entry in document["strategies"].items():
            row = f"{name:>18} "
            for c in shown:
                j = int(np.searchsorted(entry["n_labels"], c, side="right")) - 1
                row += f"{entry['accuracy_mean'][j]:>7.1%} "
            reach = entry["labels_to_reach"]
            row += f"{_or_dash(reach['0.85']):>8} {_or_dash(reach['0.98_of_full']):>12}"
            lines.append(row)
        lines.append(f"full-data accuracy {self.full_data_accuracy:.1%} (mean of {self.seeds} seed(s))")
        return "\n".join(lines)


def _or_dash(value: int | None) -> str:
    return "-" if value is None else str(value)


def _fit_and_score(
    make_head: Callable[[int], Any], seed: int, embeddings: np.ndarray, labels: np.ndarray, labelled: np.ndarray,
    unlabelled: np.ndarray, holdout: np.ndarray, classes: np.ndarray, semi_supervised: bool,
) -> tuple[Any, float]:
    head = make_head(seed)
    if semi_supervised and len(unlabelled):
        X = np.concatenate([embeddings[labelled], embeddings[unlabelled]])
        y = np.concatenate([labels[labelled], np.full(len(unlabelled), -1, dtype=labels.dtype)])
    else:
        X, y = embeddings[labelled], labels[labelled]
    head.fit(X, y)
    proba = proba_in_order(head, embeddings[holdout], classes)
    return head, float(np.mean(classes[np.argmax(proba, axis=1)] == labels[holdout]))


def run_offline(
    embeddings: np.ndarray,
    labels: np.ndarray,
    make_head: Callable[[int], Any],
    *,
    strategies: Sequence[str] = ("auto", "random"),
    seeds: Sequence[int] = (0,),
    start_per_class: int = 1,
    n_labels: int = 300,
    batch: int = 10,
    holdout_fraction: float = 0.1,
    semi_supervised: bool = True,
    progress: Callable[[int], None] | None = None,
    with_random: bool = True,
    query_params: dict[str, Any] | None = None,
    sampled: bool = False,
    sample_params: dict[str, Any] | None = None,
) -> OfflineResult:
    """Run every strategy (and ``random``) from the same start per seed up to ``n_labels`` labels.

    ``labels`` must be integer class indices (``-1`` is the unlabelled marker for a semi-supervised head).
    ``progress(1)`` is called after every fit. ``query_params`` go to :func:`learner.query.query` (e.g.
    ``switch_per_class``); ``with_random=False`` skips the random arm (only for tuning runs). ``sampled`` draws
every non-random strategy's batches with :func:`learner.query.sampled_query` (``sample_params``: its
``epsilon``, ``power``, ``candidates``).
    """
    embeddings = np.asarray(embeddings, dtype=np.float32)
    labels = np.asarray(labels)
    if labels.dtype.kind not in "iu":
        raise ValueError("labels must be integer class indices")
    unknown = [s for s in strategies if s not in STRATEGIES]
    if unknown:
        raise ValueError(f"unknown strategies {unknown}; choose among {', '.join(STRATEGIES)}")
    if start_per_class < 0 or batch < 1 or n_labels < 1:
        raise ValueError("start_per_class must be >= 0, batch and n_labels >= 1")
    names = list(dict.fromkeys([*strategies, *(["random"] if with_random else [])]))
    classes = np.unique(labels)
    curves = {name: StrategyCurve([], []) for name in names}
    full = []
    for seed in seeds:
        pool, holdout = holdout_split(labels, holdout_fraction, seed)
        start = (budget_picks(labels, pool, Budget("start", per_class=start_per_class), seed)
                 if start_per_class else np.zeros(0, dtype=np.int64))
        _, full_accuracy = _fit_and_score(make_head, seed, embeddings, labels, pool, np.zeros(0, np.int64), holdout,
                                          classes, semi_supervised)
        full.append(full_accuracy)
        finals = []
        for name in names:
            counts, accuracies = _one_run(
                name, seed, embeddings, labels, pool, holdout, start, classes, make_head, n_labels, batch,
                semi_supervised, progress, query_params or {},
                {**(sample_params or {})} if sampled and name != "random" else None,
            )
            curve = curves[name]
            if not curve.n_labels:
                curve.n_labels = counts
            elif curve.n_labels != counts:
                raise RuntimeError(f"{name}: rounds differ between seeds ({counts} vs {curve.n_labels})")
            curve.accuracies.append(accuracies)
            logger.debug("seed %d %s: %s", seed, name, " ".join(f"{n}:{a:.3f}" for n, a in zip(counts, accuracies)))
            finals.append(f"{name} {accuracies[-1]:.1%}" if accuracies else f"{name} -")
        # One line per seed, so a long run without progress bars still shows that (and how) it goes.
        logger.info("seed %d (%d of %d) at %d labels: %s; all labels %.1f%%", seed, len(full), len(seeds),
                    counts[-1] if counts else 0, ", ".join(finals),
                    100 * full_accuracy)
    return OfflineResult(
        curves, float(np.mean(full)), len(seeds),
        settings={"start_per_class": start_per_class, "n_labels": n_labels, "batch": batch,
                  "holdout_fraction": holdout_fraction, "seed_list": list(seeds),
                  **({"sampled": {**(sample_params or {})}} if sampled else {})},
    )


def _one_run(
    strategy: str, seed: int, embeddings: np.ndarray, labels: np.ndarray, pool: np.ndarray, holdout: np.ndarray,
    start: np.ndarray, classes: np.ndarray, make_head: Callable[[int], Any], n_labels: int, batch: int,
    semi_supervised: bool, progress: Callable[[int], None] | None, query_params: dict[str, Any],
    sample_params: dict[str, Any] | None = None,
) -> tuple[list[int], list[float]]:
    labelled = np.asarray(start, dtype=np.int64)
    in_pool = np.ones(len(labels), dtype=bool)
    in_pool[holdout] = False
    in_pool[labelled] = False
    counts, accuracies = [], []
    head = None
    rng = np.random.default_rng([seed, 1])
    while True:
        unlabelled = np.flatnonzero(in_pool)
        if len(labelled):
            head, accuracy = _fit_and_score(make_head, seed, embeddings, labels, labelled, unlabelled, holdout,
                                            classes, semi_supervised)
            counts.append(len(labelled))
            accuracies.append(accuracy)
            if progress is not None:
                progress(1)
        if len(labelled) >= n_labels or not len(unlabelled):
            return counts, accuracies
        n = min(batch, n_labels - len(labelled))
        pick = query if sample_params is None else sampled_query
        picked = pick(
            head if head is not None else make_head(seed), embeddings[unlabelled], n, strategy,
            random_state=int(rng.integers(2**31 - 1)), X_labelled=embeddings[labelled] if len(labelled) else None,
            n_classes=len(classes), **query_params, **(sample_params or {}),
        ).indices
        chosen = unlabelled[picked]
        labelled = np.concatenate([labelled, chosen])
        in_pool[chosen] = False
