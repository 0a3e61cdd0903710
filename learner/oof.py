"""Out-of-fold class probabilities on labelled embeddings: every labelled row scored by a head that never saw it.

The checks on the labels the loop collects (:mod:`learner.label_issues`: cleanlab's suspected errors) and the
weighted accuracy estimate beside the holdout (:mod:`learner.estimate`) both need, for each labelled row, the
probabilities of a model trained without it. :func:`out_of_fold_proba` fits ``folds`` fresh heads on cached
embeddings (no backbone run), each on all rows but one stratified fold, and scores that fold.

A class with fewer labelled rows than folds is spread over as many folds as it has rows; the fold that holds
a class's only row is scored by a head that never saw the class, so that row's probability for its class is
0 there (its column is filled with zeros, not left out): a singleton cannot vouch for itself.
"""

from __future__ import annotations

import warnings
from typing import Any, Callable

import numpy as np
from sklearn.model_selection import KFold, StratifiedKFold

#: Folds by default: five, as cleanlab's own ``estimate_cv_predicted_probabilities``.
DEFAULT_FOLDS = 5


def fold_assignment(y: np.ndarray, folds: int, seed: int) -> np.ndarray:
    """The fold (0 .. folds-1) of every row, stratified by class, seeded; rows of a rare class spread out."""
    y = np.asarray(y)
    if len(y) < 2:
        raise ValueError(f"out-of-fold probabilities need at least 2 labelled rows, got {len(y)}")
    # StratifiedKFold refuses more folds than the largest class has rows (every class rare: early in a project);
    # with one row a class there is nothing to stratify.
    largest = int(np.bincount(np.unique(y, return_inverse=True)[1]).max())
    folds = max(2, min(int(folds), largest, len(y)))
    fold = np.empty(len(y), dtype=np.int64)
    with warnings.catch_warnings():
        # "The least populated class in y has only 1 members": expected early in a project; handled below.
        warnings.simplefilter("ignore", UserWarning)
        splitter = (StratifiedKFold if largest >= folds else KFold)(n_splits=folds, shuffle=True, random_state=seed)
        for k, (_, test) in enumerate(splitter.split(np.zeros(len(y)), y)):
            fold[test] = k
    return fold


def out_of_fold_proba(
    make_head: Callable[[], Any],
    X: np.ndarray,
    y: np.ndarray,
    n_classes: int,
    folds: int = DEFAULT_FOLDS,
    seed: int = 0,
    X_unlabelled: np.ndarray | None = None,
) -> np.ndarray:
    """``(len(X), n_classes)`` probabilities, row ``i`` from a head fitted without row ``i``'s fold.

    ``y`` holds class indices ``0 .. n_classes-1``; ``make_head()`` returns a fresh, unfitted scikit-learn
    classifier (the service's head factory). ``X_unlabelled``, when given, is appended to every fold's
    training rows with label ``-1`` (for a semi-supervised head; a transductive head may see the pool, never
    the holdout). Columns follow class indices whatever subset of classes a fold's head saw.
    """
    X = np.asarray(X)
    y = np.asarray(y, dtype=np.int64)
    if X.ndim != 2 or len(X) != len(y):
        raise ValueError(f"X must be (n, d) with one label per row; got X {X.shape} and {len(y)} labels")
    if len(y) and (y.min() < 0 or y.max() >= n_classes):
        raise ValueError(f"labels must be class indices 0..{n_classes - 1}; got {y.min()}..{y.max()}")
    proba = np.zeros((len(y), n_classes), dtype=np.float64)
    fold = fold_assignment(y, folds, seed)
    for k in np.unique(fold):
        test = fold == k
        train = ~test
        if len(np.unique(y[train])) < 2:
            # One class left to train on: it is all a head could say; the rows get that class with certainty.
            proba[np.ix_(test, np.unique(y[train]))] = 1.0
            continue
        X_fit, y_fit = X[train], y[train]
        if X_unlabelled is not None and len(X_unlabelled):
            X_fit = np.concatenate([X_fit, np.asarray(X_unlabelled, dtype=X_fit.dtype)])
            y_fit = np.concatenate([y_fit, np.full(len(X_unlabelled), -1, dtype=np.int64)])
        head = make_head().fit(X_fit, y_fit)
        columns = np.asarray(head.classes_, dtype=np.int64)
        proba[np.ix_(test, columns)] = head.predict_proba(X[test])
    return proba
