"""Labels that look wrong, and which label to trust when annotators disagree: cleanlab on our probabilities.

Three questions about the labels the loop itself collects, each answered by cleanlab on out-of-fold
probabilities (:func:`learner.oof.out_of_fold_proba`: no label vouches for itself):

- :func:`find_suspects`: which labelled items look mislabelled (confident learning,
  ``cleanlab.filter.find_label_issues``), each with the class the model believes and a label-quality score
  (``cleanlab.rank.get_label_quality_scores``, self-confidence: low is suspect);
- :func:`consensus`: with several answers per item, the consensus label, each item's consensus quality, and
  each annotator's estimated quality (CROWDLAB, ``cleanlab.multiannotator.get_label_quality_multiannotator``);
- :func:`second_look_scores`: ActiveLab's scores (``cleanlab.multiannotator.get_active_learning_scores``)
  for "re-label an old item" against "label a new one" on one scale (low: a label there is worth more).

Everything is numpy in, numpy out; class labels are indices ``0 .. n_classes-1``. cleanlab's multiannotator module
prints "CAUTION" lines to stdout (rare classes, annotators with few answers): :func:`cleanlab_output_to_log` sends
them to this module's logger at DEBUG instead, around every cleanlab call here that prints.
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

logger = logging.getLogger(__name__)

#: Fewer labelled rows than this per class on average and confident learning has too little to go on.
MIN_LABELS_PER_CLASS = 2


@contextlib.contextmanager
def cleanlab_output_to_log() -> Iterator[None]:
    """What cleanlab prints inside the block goes to the log at DEBUG, a record per line, not to stdout (a service's
    stdout is its operator's; a notebook's, its reader's). stdout is process-wide: another thread's prints inside the
    block land in the log too, at DEBUG."""
    printed = io.StringIO()
    try:
        with contextlib.redirect_stdout(printed):
            yield
    finally:
        for line in printed.getvalue().splitlines():
            if line.strip():
                logger.debug("cleanlab: %s", line.strip())


@dataclass(frozen=True)
class Suspects:
    """Labelled rows whose label looks wrong, most suspect first."""

    indices: np.ndarray  # int64 rows into the labels given
    suggested: np.ndarray  # int64: the class the out-of-fold model believes
    scores: np.ndarray  # float64 label quality in [0, 1] (self-confidence): low is suspect


def _check(labels: np.ndarray, proba: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    labels = np.asarray(labels, dtype=np.int64)
    proba = np.asarray(proba, dtype=np.float64)
    if proba.ndim != 2 or len(proba) != len(labels):
        raise ValueError(f"need one probability row per label; got {proba.shape} for {len(labels)} labels")
    if len(labels) and (labels.min() < 0 or labels.max() >= proba.shape[1]):
        raise ValueError(f"labels must be class indices 0..{proba.shape[1] - 1}")
    # cleanlab wants rows that sum to 1 and every class present in pred_probs' columns.
    proba = np.clip(proba, 1e-12, None)
    return labels, proba / proba.sum(axis=1, keepdims=True)


def find_suspects(labels: np.ndarray, oof_proba: np.ndarray) -> Suspects:
    """The labelled rows cleanlab flags as label issues, ranked by self-confidence (most suspect first).

    Too few labels to say anything (fewer than :data:`MIN_LABELS_PER_CLASS` per class on average, or fewer
    than two classes labelled) flags nothing.
    """
    from cleanlab.filter import find_label_issues
    from cleanlab.rank import get_label_quality_scores

    labels, proba = _check(labels, oof_proba)
    n_classes = proba.shape[1]
    empty = Suspects(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0))
    if len(np.unique(labels)) < 2 or len(labels) < MIN_LABELS_PER_CLASS * n_classes:
        return empty
    scores = get_label_quality_scores(labels, proba, method="self_confidence")
    # n_jobs=1: cleanlab's default starts a process pool per call, 0.3 s here against 3 ms for 150 labels and
    # 0.27 s against 0.07 s for 6,000 (benchmarks/label_noise.py); the per-class work is tiny.
    with warnings.catch_warnings():
        # "May not flag all label issues in class k, it has too few examples": expected early in a project.
        warnings.simplefilter("ignore", UserWarning)
        flagged = find_label_issues(labels, proba, filter_by="prune_by_noise_rate",
                                    return_indices_ranked_by="self_confidence", n_jobs=1)
    flagged = np.asarray(flagged, dtype=np.int64)
    return Suspects(flagged, proba[flagged].argmax(axis=1).astype(np.int64), scores[flagged].astype(np.float64))


@dataclass(frozen=True)
class Consensus:
    """CROWDLAB's verdict on items answered by one or more annotators."""

    labels: np.ndarray  # int64 consensus class per item
    quality: np.ndarray  # float64 consensus quality score per item (low: doubtful even after the vote)
    agreement: np.ndarray  # float64 share of the item's annotators who gave the consensus label
    annotator_quality: np.ndarray  # float64 per annotator (column), NaN for an annotator with no answer


def consensus(answers: np.ndarray, oof_proba: np.ndarray) -> Consensus:
    """CROWDLAB over ``answers`` (items x annotators, class index or NaN where that annotator did not answer).

    ``oof_proba`` is the model's out-of-fold probability per item. Every item needs at least one answer.
    """
    import pandas as pd
    from cleanlab.multiannotator import get_label_quality_multiannotator

    answers = np.asarray(answers, dtype=np.float64)
    proba = np.asarray(oof_proba, dtype=np.float64)
    if answers.ndim != 2 or len(answers) != len(proba):
        raise ValueError(f"answers must be (items, annotators) with one probability row per item; got {answers.shape}, {proba.shape}")
    answered = ~np.isnan(answers)
    if not answered.any(axis=1).all():
        raise ValueError("every item needs at least one answer")
    _, proba = _check(np.zeros(len(proba), np.int64), proba)
    used = answered.any(axis=0)  # cleanlab refuses an annotator column with no answers
    frame = pd.DataFrame(answers[:, used], columns=[f"a{j}" for j in np.flatnonzero(used)])
    if used.sum() == 1 or (answered.sum(axis=1) == 1).all():
        # One answer per item: there is nothing to vote on; the answers stand and quality is the model's.
        only = np.nanmax(answers, axis=1).astype(np.int64)
        quality = proba[np.arange(len(only)), only]
        return Consensus(only, quality, np.ones(len(only)), np.full(answers.shape[1], np.nan))
    with cleanlab_output_to_log():
        result = get_label_quality_multiannotator(frame, proba, verbose=False)
    table = result["label_quality"]
    stats = result["annotator_stats"]
    annotator_quality = np.full(answers.shape[1], np.nan)
    for name, q in stats["annotator_quality"].items():
        annotator_quality[int(str(name)[1:])] = float(q)
    return Consensus(
        table["consensus_label"].to_numpy(dtype=np.int64),
        table["consensus_quality_score"].to_numpy(dtype=np.float64),
        table["annotator_agreement"].to_numpy(dtype=np.float64),
        annotator_quality,
    )


def second_look_scores(answers: np.ndarray, oof_proba: np.ndarray, pool_proba: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """ActiveLab: one score per labelled item (another answer there) and per pool item (a first answer).

    Both on one scale, low first: the rows worth a label most. ``answers`` as in :func:`consensus`.
    """
    from cleanlab.multiannotator import get_active_learning_scores

    answers = np.asarray(answers, dtype=np.float64)
    _, proba = _check(np.zeros(len(oof_proba), np.int64), oof_proba)
    _, pool = _check(np.zeros(len(pool_proba), np.int64), pool_proba)
    used = ~np.isnan(answers).all(axis=0)
    with cleanlab_output_to_log():
        labelled, unlabelled = get_active_learning_scores(answers[:, used], proba, pool)
    return np.asarray(labelled, dtype=np.float64), np.asarray(unlabelled, dtype=np.float64)
