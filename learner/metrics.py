"""Evaluation of a model on a holdout: the figures the origin study reported, and the ones it should have.

:func:`evaluate` takes the true labels, the model's probabilities and the class order of its columns:

- ``accuracy``: argmax accuracy over every holdout item, with its 95% Wilson interval (``accuracy_interval``,
  :func:`wilson_interval`): what the holdout's size allows one to say about it;
- per threshold ``t``: ``coverage`` (share of items whose max probability is at least ``t``, i.e. that the
  threshold rule accepts) and ``selective_accuracy`` (argmax accuracy on those accepted items; ``None`` when
  none is accepted);
- per threshold, ``p_true_above``: the share of items whose probability *of the true class* exceeds ``t``.
  This is the study's own figure; it needs the true label, so it cannot be used as a decision rule, and it
  is not an accuracy of anything a deployed model does. It is here for comparison only;
- ``per_class_accuracy`` (recall per true class; ``None`` for a class absent from the holdout);
- ``confusion``: counts, rows true class, columns predicted class, in ``classes`` order.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
from scipy.stats import norm


def wilson_interval(successes: float, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """The Wilson score interval for a proportion ``successes / n`` (``(0, 1)`` when ``n`` is 0).

    Unlike the normal approximation it stays inside [0, 1] and keeps its coverage near 0% and 100%, where
    holdout accuracies of tiny or excellent models sit.
    """
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be within (0, 1), got {confidence}")
    if n <= 0:
        return 0.0, 1.0
    z = float(norm.ppf(0.5 + confidence / 2))
    share = successes / n
    centre = (share + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * np.sqrt(share * (1 - share) / n + z * z / (4 * n * n))
    # min/max: rounding must never leave the observed share outside its own interval.
    return float(max(0.0, min(centre - half, share))), float(min(1.0, max(centre + half, share)))


@dataclass(frozen=True)
class ThresholdFigures:
    """What a max-probability threshold does on the holdout."""

    threshold: float
    coverage: float
    selective_accuracy: float | None
    p_true_above: float


@dataclass(frozen=True)
class Evaluation:
    """Holdout figures for one model; :meth:`to_dict` is JSON-ready."""

    n: int
    classes: list[Any]
    accuracy: float
    thresholds: list[ThresholdFigures]
    per_class_accuracy: dict[str, float | None]
    confusion: np.ndarray = field(repr=False)

    def to_dict(self) -> dict[str, Any]:
        """Plain Python types only (lists, floats, ints, strings, None)."""
        return {
            "n": self.n,
            "classes": [_plain(c) for c in self.classes],
            "accuracy": self.accuracy,
            "accuracy_interval": list(wilson_interval(self.accuracy * self.n, self.n)),
            "thresholds": [
                {
                    "threshold": t.threshold,
                    "coverage": t.coverage,
                    "selective_accuracy": t.selective_accuracy,
                    "p_true_above": t.p_true_above,
                }
                for t in self.thresholds
            ],
            "per_class_accuracy": dict(self.per_class_accuracy),
            "confusion": self.confusion.astype(int).tolist(),
        }


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


def evaluate(
    y_true: Sequence[Any] | np.ndarray,
    proba: np.ndarray,
    classes: Sequence[Any] | np.ndarray,
    thresholds: Sequence[float] = (0.5, 0.8),
) -> Evaluation:
    """Holdout figures for probabilities ``proba`` (n, k) whose columns are in ``classes`` order."""
    proba = np.asarray(proba, dtype=np.float64)
    classes = list(np.asarray(classes).tolist())
    y_true = np.asarray(y_true)
    if proba.ndim != 2 or proba.shape[1] != len(classes):
        raise ValueError(f"proba has shape {proba.shape}, expected (n, {len(classes)}) for {len(classes)} classes")
    if len(y_true) != proba.shape[0]:
        raise ValueError(f"{len(y_true)} labels for {proba.shape[0]} rows of probabilities")
    if len(y_true) == 0:
        raise ValueError("cannot evaluate on an empty holdout")
    index = {label: j for j, label in enumerate(classes)}
    unknown = sorted({str(v) for v in y_true.tolist() if v not in index})
    if unknown:
        raise ValueError(f"labels not among the model's classes: {', '.join(unknown[:5])}")
    true_index = np.array([index[v] for v in y_true.tolist()])
    predicted = proba.argmax(axis=1)
    correct = predicted == true_index
    top = proba.max(axis=1)
    p_true = proba[np.arange(len(true_index)), true_index]

    figures = []
    for t in thresholds:
        accepted = top >= t
        figures.append(
            ThresholdFigures(
                threshold=float(t),
                coverage=float(accepted.mean()),
                selective_accuracy=float(correct[accepted].mean()) if accepted.any() else None,
                p_true_above=float((p_true > t).mean()),
            )
        )

    k = len(classes)
    confusion = np.zeros((k, k), dtype=np.int64)
    np.add.at(confusion, (true_index, predicted), 1)
    per_class: dict[str, float | None] = {}
    for j, label in enumerate(classes):
        total = confusion[j].sum()
        per_class[str(label)] = float(confusion[j, j] / total) if total else None

    return Evaluation(
        n=int(len(y_true)),
        classes=classes,
        accuracy=float(correct.mean()),
        thresholds=figures,
        per_class_accuracy=per_class,
        confusion=confusion,
    )
