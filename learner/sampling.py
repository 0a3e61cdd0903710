"""Seeded, class-stratified sampling: the one implementation behind the holdout split, the curve's budget picks,
the per-class limit of a dataset and the demo's seed / holdout / pool split.

:func:`stratified_split` shuffles each class's rows with one seeded generator (classes in sorted order) and
takes a number of them per class; what it takes and what it leaves are both returned, sorted, so a caller can
split again from the rest.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

Take = int | Sequence[int] | Callable[[int], int]


def stratified_split(
    labels: np.ndarray, take: Take, seed: int, rows: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(taken, rest) row numbers, each sorted: per class, a seeded random ``take`` of its rows.

    ``take`` is a count for every class, one count per class (in sorted class order), or a function of how many
    rows the class has; a count is clipped to ``[0, rows in the class]``. ``rows`` restricts the draw to those
    row numbers (default: all of ``labels``).
    """
    labels = np.asarray(labels)
    rows = np.arange(len(labels)) if rows is None else np.asarray(rows, dtype=np.int64)
    rng = np.random.default_rng(seed)
    classes = np.unique(labels[rows])
    if not callable(take) and not np.isscalar(take) and len(take) != len(classes):
        raise ValueError(f"take has {len(take)} counts for {len(classes)} classes")
    taken, rest = [np.zeros(0, dtype=np.int64)], [np.zeros(0, dtype=np.int64)]
    for position, label in enumerate(classes):
        members = rng.permutation(rows[labels[rows] == label])
        wanted = take(len(members)) if callable(take) else take if np.isscalar(take) else take[position]
        count = int(min(max(int(wanted), 0), len(members)))
        taken.append(members[:count])
        rest.append(members[count:])
    return np.sort(np.concatenate(taken)), np.sort(np.concatenate(rest))


def quotas(total: int, n_classes: int) -> list[int]:
    """``total`` spread over ``n_classes`` as evenly as possible (the first classes get the remainder)."""
    base, extra = divmod(int(total), int(n_classes))
    return [base + (1 if position < extra else 0) for position in range(n_classes)]
