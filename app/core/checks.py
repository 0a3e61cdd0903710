"""The label checks after a retrain: suspected label errors, consensus over several answers, second looks.

:func:`check_labels` runs in the scheduler's ``check-labels`` job once a new version serves (not inside the
retrain: five out-of-fold fits cost several retrains, see ``benchmarks/label_checks.py``). On the cached embeddings
of the labelled training items it computes out-of-fold probabilities (:func:`learner.oof.out_of_fold_proba`: no
label vouches for itself), then:

- where an item has several answers (two annotators, or a second look), CROWDLAB's consensus
  (:func:`learner.label_issues.consensus`) is its label from the next retrain on, not the newest answer; each
  annotator's estimated quality and their agreement go to the report;
- cleanlab's suspects (:func:`learner.label_issues.find_suspects`) are stored for the version
  (``GET /v1/items?suspect=true``), and the most suspect items not looked at twice yet are queued as second looks:
  a Label Studio task of their own with no guess, noting who answered already (Label Studio 1.23.2's open-source
  edition has no task assignment, so the note is in the task's data);
- the holdout's labels are checked by the serving version itself (it never trained on them, so its probabilities
  there are already out of sample) and reported apart: a wrong holdout label bends the measure, not the model.

When a consensus changes a label the serving version trained on, the check retrains at once.
"""

from __future__ import annotations

import logging
import math
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from app.store import LabelCheck, LabelledItem

if TYPE_CHECKING:
    from app.core.training import Trainer

logger = logging.getLogger(__name__)

#: The meta key holding the newest check's summary (annotators' agreement and quality, counts, seconds).
SUMMARY_KEY = "label_checks"
#: The meta key holding each checked version's review batch split (new items, second looks, holdout): the report's.
SPLITS_KEY = "batch_splits"
#: At most this many pool items are scored for the budget's comparison (a seeded sample above it).
POOL_SAMPLE = 2000


def check_head_factory() -> Any:
    """A fresh head of the service's default kind (the out-of-fold heads never warm-start from the served one)."""
    from app.core.training import default_head_factory

    return default_head_factory(None)


@dataclass
class CheckResult:
    """What one run of the checks found."""

    version: str
    n_checked: int = 0
    n_suspects: int = 0
    n_holdout_checked: int = 0
    n_holdout_suspects: int = 0
    n_consensus: int = 0
    consensus_changed: int = 0
    second_looks: int = 0
    annotator_quality: dict[str, float] = field(default_factory=dict)
    mean_agreement: float | None = None
    batch_split: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return dict(self.__dict__)


def trained_labels(store: Any, labelled: list[LabelledItem]) -> list[LabelledItem]:
    """``labelled`` (each item's newest answer) with the stored consensus where it still holds: what trains."""
    import dataclasses

    consensus = store.consensus_labels()
    return [
        dataclasses.replace(row, label=consensus[row.item_id][0])
        if row.item_id in consensus and consensus[row.item_id][1] == row.label_id else row
        for row in labelled
    ]


def check_labels(trainer: Trainer, force: bool = False) -> CheckResult | None:
    """Check the labels behind the serving version (once per version unless ``force``); None when there is nothing
    to check (no model, fewer than two classes labelled, or this version checked already)."""
    from learner.label_issues import consensus, find_suspects
    from learner.oof import out_of_fold_proba

    store = trainer.store
    model = trainer.serving_model()  # the newest version, whichever process trained it
    if model is None or (not force and store.checked_version() == model.version):
        return None
    started = time.perf_counter()
    classes = list(model.classes)
    index = {name: j for j, name in enumerate(classes)}
    newest = [row for row in store.current_labels() if row.label in index and row.image_path]
    X, kept = trainer.embed_items([(r.item_id, r.content_hash, r.source, r.image_path) for r in newest])
    newest = [newest[i] for i in kept]
    y = np.array([index[row.label] for row in newest], dtype=np.int64)
    if len(np.unique(y)) < 2:
        return None
    proba = out_of_fold_proba(lambda: trainer.head_factory(None), X, y, len(classes), seed=model.max_label_id)
    result = CheckResult(model.version, n_checked=len(newest))
    row_of = {row.item_id: i for i, row in enumerate(newest)}
    answers: dict[str, dict[str, str]] = defaultdict(dict)
    for answer in store.answers():
        if answer.item_id in row_of and answer.label in index:
            answers[answer.item_id][answer.annotator] = answer.label  # oldest first: an annotator's newest wins
    several = [item for item, who in answers.items() if len(who) > 1]
    annotators = sorted({name for who in answers.values() for name in who})
    column = {name: j for j, name in enumerate(annotators)}
    matrix = np.full((len(newest), len(annotators)), np.nan)  # items x annotators, class index where answered
    for item, who in answers.items():
        for name, label in who.items():
            matrix[row_of[item], column[name]] = index[label]
    answered = ~np.isnan(matrix).all(axis=1)
    agreed: dict[str, tuple[str, float]] = {}
    if several:
        verdict = consensus(matrix[answered], proba[answered])
        for k, i in enumerate(np.flatnonzero(answered)):
            if newest[i].item_id in several:
                agreed[newest[i].item_id] = (classes[int(verdict.labels[k])], float(verdict.agreement[k]))
        result.annotator_quality = {name: float(q) for name, q in zip(annotators, verdict.annotator_quality) if not math.isnan(q)}
        result.mean_agreement = float(np.mean([agreed[item][1] for item in agreed])) if agreed else None
    result.n_consensus = len(agreed)
    before = {row.item_id: row.label for row in trained_labels(store, newest)}
    y_checked = np.array([index[agreed[row.item_id][0]] if row.item_id in agreed else y[i] for i, row in enumerate(newest)])
    suspects = find_suspects(y_checked, proba)
    checks: dict[str, LabelCheck] = {}
    for i, suggested, score in zip(suspects.indices.tolist(), suspects.suggested.tolist(), suspects.scores.tolist()):
        row = newest[i]
        checks[row.item_id] = LabelCheck(
            model_version=model.version, item_id=row.item_id, split="training", label=classes[int(y_checked[i])], suspect=True,
            suggested=classes[int(suggested)], score=float(score), newest_label_id=row.label_id,
        )  # fmt: skip
    for item, (label, agreement) in agreed.items():
        row = newest[row_of[item]]
        base = checks.get(item) or LabelCheck(model_version=model.version, item_id=item, split="training", label=label,
                                              suspect=False, newest_label_id=row.label_id)
        checks[item] = LabelCheck(**{**base.__dict__, "consensus": label, "agreement": agreement})
    result.n_suspects = len(suspects.indices)
    holdout = check_holdout(trainer, model, index)
    result.n_holdout_checked = holdout[0]
    result.n_holdout_suspects = len(holdout[1])
    store.record_label_checks(model.version, list(checks.values()) + holdout[1])
    result.consensus_changed = sum(1 for item, (label, _) in agreed.items() if before.get(item) != label)
    split = split_budget(trainer, model, matrix, answered, proba, [newest[i].item_id for i in suspects.indices.tolist()], newest)
    result.batch_split = split.as_dict()
    looks = [newest[i].item_id for i in split.second_looks.tolist()]
    result.second_looks = trainer.store.queue_second_looks(model.version, {item: sorted(answers.get(item, {})) for item in looks})
    result.seconds = time.perf_counter() - started
    store.set_meta(SUMMARY_KEY, result.to_dict())
    store.set_meta(SPLITS_KEY, {**(store.get_meta(SPLITS_KEY) or {}), model.version: result.batch_split})
    logger.info(
        "label checks on %s: %d of %d training labels suspect, %d of %d holdout labels; %d consensus labels (%d changed); "
        "%d second looks queued; %.2f s", model.version, result.n_suspects, result.n_checked, result.n_holdout_suspects,
        result.n_holdout_checked, result.n_consensus, result.consensus_changed, result.second_looks, result.seconds,
    )  # fmt: skip
    if result.consensus_changed:
        trainer.retrain(reason="consensus", force=True)
    return result


#: The holdout's labels are checked only by a version trained on at least this many labels per class: a weaker
#: model disagrees with right labels too often (the demo's first version, 1 label per class and 73% accurate,
#: flagged 199 of its 1,000 true holdout labels), and a holdout label is a measure, not a guess to second-guess.
HOLDOUT_CHECK_MIN_PER_CLASS = 5


def check_holdout(trainer: Trainer, model: Any, index: dict[str, int]) -> tuple[int, list[LabelCheck]]:
    """The holdout's suspected labels under ``model`` (it never trained on them): (labels checked, suspects); none
    checked while ``model`` has fewer than :data:`HOLDOUT_CHECK_MIN_PER_CLASS` labels per class."""
    from learner.label_issues import find_suspects

    if model.n_labels < HOLDOUT_CHECK_MIN_PER_CLASS * len(index):
        return 0, []
    rows = [row for row in trainer.store.current_labels(holdout=True) if row.label in index and row.image_path]
    if not rows:
        return 0, []
    X, kept = trainer.embed_items([(r.item_id, r.content_hash, r.source, r.image_path) for r in rows])
    rows = [rows[i] for i in kept]
    if not rows:
        return 0, []
    classes = list(index)
    proba = model.proba(X)
    y = np.array([index[row.label] for row in rows], dtype=np.int64)
    found = find_suspects(y, proba)
    return len(rows), [
        LabelCheck(model_version=model.version, item_id=rows[i].item_id, split="holdout", label=rows[i].label, suspect=True,
                   suggested=classes[int(s)], score=float(q), newest_label_id=rows[i].label_id)
        for i, s, q in zip(found.indices.tolist(), found.suggested.tolist(), found.scores.tolist())
    ]  # fmt: skip


def split_budget(
    trainer: Trainer, model: Any, matrix: np.ndarray, answered: np.ndarray, proba: np.ndarray, suspects: list[str],
    newest: list[LabelledItem],
) -> Any:
    """The next review batch split (:func:`learner.budget.split_batch`, its measured default rule): holdout top-ups
    first, then the suspects ActiveLab ranks most worth a second answer, at most ``service.second_look_share`` of
    the rest (letting ActiveLab's scores against the pool decide alone took about one second look in a hundred
    labels and recovered nothing: ``benchmarks/label_noise.py``). Only suspects never looked at twice are
    candidates."""
    from app.core.holdout import holdout_tasks_to_queue, per_refresh
    from learner.budget import split_batch
    from learner.label_issues import second_look_scores

    store, service = trainer.store, trainer.service
    counts = store.holdout_counts()
    holdout = holdout_tasks_to_queue(
        counts.n_labelled, counts.n_open, counts.n_items - counts.n_labelled - counts.n_open, service.holdout.min_labels,
        per_refresh(service.holdout, service.review_batch_size),
    ) if service.holdout.reserve else 0  # fmt: skip
    pool = [row for row in store.unlabelled_pool() if row.image_path and row.status not in ("pending", "sent", "failed")]
    if len(pool) > POOL_SAMPLE:
        keep = np.sort(np.random.default_rng(model.max_label_id).choice(len(pool), size=POOL_SAMPLE, replace=False))
        pool = [pool[i] for i in keep]
    X_pool, _ = trainer.embed_items([(r.id, r.content_hash, r.source, r.image_path) for r in pool]) if pool else (None, [])
    candidates = np.full(len(newest), np.nan)
    looked = store.second_looked(suspects)
    rows = np.flatnonzero(answered)
    if X_pool is not None and len(X_pool) and len(rows):
        labelled_scores, pool_scores = second_look_scores(matrix[rows], proba[rows], model.proba(X_pool))
    else:  # no pool to compare with: the suspects by self-confidence (low first), up to the cap
        given = np.nan_to_num(np.nanmax(matrix[rows], axis=1)).astype(np.int64)
        labelled_scores, pool_scores = proba[rows, given], None
    eligible = set(suspects) - looked
    for k, i in enumerate(rows):
        if newest[i].item_id in eligible:
            candidates[i] = labelled_scores[k]
    return split_batch(service.review_batch_size, holdout, candidates, pool_scores,
                       max_second_look_share=service.second_look_share)
