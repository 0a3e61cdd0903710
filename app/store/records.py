"""The store's records: what goes in (``New...``) and what comes out, all frozen dataclasses.

Every :class:`~app.store.Store` method returns one of these, a list of them, a count or a small mapping of
counts, never a row dict; the field names are the table's column names, so a record reads like its row.
Timestamps are timezone-aware UTC. JSON is made from them in one place, at the HTTP edge (:mod:`app.http.records`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

# -- what goes in -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class NewItem:
    """An image to record; ``image_path`` is relative to the data folder."""

    id: str
    content_hash: str
    source: str
    split: str
    image_path: str | None = None


@dataclass(frozen=True)
class NewLabel:
    """A label to record for an existing item."""

    item_id: str
    label: str
    source: str
    annotator: str | None = None
    external_id: str | None = None
    created_at: datetime | None = None


@dataclass(frozen=True)
class NewPrediction:
    """One prediction; ``review`` queues the item for annotators in the same transaction."""

    item_id: str
    model_version: str
    label: str
    score: float
    probabilities: dict[str, float]
    decision: str
    rule: str
    reason: str | None = None

    @property
    def review(self) -> bool:
        """Whether the decision sends the item to annotators."""
        return self.decision == "review"


@dataclass(frozen=True)
class LabelledItem:
    """An item with its current label (the newest label not withdrawn)."""

    item_id: str
    label: str
    content_hash: str
    source: str
    image_path: str | None
    label_id: int
    split: str = field(default="seed")


@dataclass(frozen=True, kw_only=True)
class NewModelVersion:
    """A trained model version to record (``created_at`` is filled in when None); ``head_path`` is relative to the
    data folder. ``metrics`` is the holdout evaluation as free-form JSON (:func:`learner.metrics.evaluate`)."""

    version: str
    seq: int
    backbone_id: str
    classes: list[str]
    n_labels: int
    labels_per_class: dict[str, int]
    max_label_id: int
    head_path: str
    metrics: dict[str, Any] | None = None
    train_seconds: float | None = None
    labels_read_at: datetime | None = None
    created_at: datetime | None = None


# -- what comes out -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Item:
    """An image the store knows; ``image_path`` is relative to the data folder, ``quarantined`` says why its image
    cannot be used (None when it can)."""

    id: str
    content_hash: str
    source: str
    split: str
    image_path: str | None
    created_at: datetime
    quarantined: str | None


@dataclass(frozen=True)
class Label:
    """One active label of an item: the class, where it came from, who gave it and when."""

    label: str
    source: str
    annotator: str | None
    created_at: datetime


@dataclass(frozen=True)
class Prediction:
    """A stored prediction; ``probabilities`` maps each class to its probability (JSON column)."""

    id: int
    item_id: str
    model_version: str
    label: str
    score: float
    probabilities: dict[str, float]
    decision: str
    rule: str
    reason: str | None
    created_at: datetime


@dataclass(frozen=True)
class ReviewTask:
    """An item's row in the outbox to Label Studio (status pending, sent, failed or labelled)."""

    item_id: str
    status: str
    label: str
    score: float
    model_version: str
    attempts: int
    next_attempt_at: datetime
    last_error: str | None
    ls_task_id: int | None
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True)
class DueReview(ReviewTask):
    """A pending review task whose attempt is due, with its item's image path and source (to deliver it)."""

    image_path: str | None
    source: str
    split: str = "pool"  # a holdout item goes to annotators blind (no prediction)


@dataclass(frozen=True)
class HoldoutCounts:
    """The holdout's items: all of them, those labelled, those waiting with annotators."""

    n_items: int
    n_labelled: int
    n_open: int


@dataclass(frozen=True)
class ItemDetail(Item):
    """An item with its current label, its latest prediction and its review task (each None when it has none)."""

    label: Label | None = None
    prediction: Prediction | None = None
    review: ReviewTask | None = None


@dataclass(frozen=True)
class Conflict(Item):
    """An item whose active labels disagree, with every active label, oldest first."""

    labels: tuple[Label, ...] = ()


@dataclass(frozen=True)
class PoolItem:
    """A pool item with no active label, with its review status (None when it was never queued)."""

    id: str
    content_hash: str
    source: str
    image_path: str | None
    status: str | None


@dataclass(frozen=True)
class PoolColumns:
    """Unlabelled items of one split as columns, in id order: a million of them cost three lists, not a
    million records (:meth:`app.store.Store.unlabelled_columns`)."""

    ids: list[str]
    content_hashes: list[str]
    statuses: list[str | None]  # the review status, None when never queued


@dataclass(frozen=True)
class ModelVersion:
    """A recorded model version. ``metrics`` is its holdout evaluation as free-form JSON (accuracy, n, per-class
    figures, thresholds; :func:`learner.metrics.evaluate`), None without a labelled holdout."""

    version: str
    seq: int
    created_at: datetime
    backbone_id: str
    classes: list[str]
    n_labels: int
    labels_per_class: dict[str, int]
    max_label_id: int
    metrics: dict[str, Any] | None
    head_path: str
    train_seconds: float | None
    labels_read_at: datetime | None


@dataclass(frozen=True)
class WebhookEvent:
    """A Label Studio webhook kept for the processing job; ``payload`` is the body as received (free-form JSON)."""

    id: int
    received_at: datetime
    payload: Any
    processed_at: datetime | None
    error: str | None


@dataclass(frozen=True)
class RetrainJob:
    """A retrain request a client can poll (a row of the ``jobs`` table): ``kind`` retrain or retrain-force, status
    queued, running, done or failed. ``result`` is what the retrain reported, as free-form JSON."""

    id: int
    kind: str
    status: str
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    result: Any
    error: str | None


@dataclass(frozen=True, kw_only=True)
class LabelCheck:
    """What a version's label checks said about one labelled item: a suspected error, a consensus, or both.

    ``split`` is ``training`` or ``holdout`` (a wrong holdout label bends the measure, not the model: reported
    apart). ``score`` is cleanlab's label quality (low: suspect); ``consensus`` is CROWDLAB's label where the item
    has several answers, valid while ``newest_label_id`` is still the item's newest answer.
    """

    model_version: str
    item_id: str
    split: str
    label: str
    suspect: bool
    suggested: str | None = None
    score: float | None = None
    consensus: str | None = None
    agreement: float | None = None
    newest_label_id: int = 0
    created_at: datetime | None = None


@dataclass(frozen=True)
class Answer:
    """One active answer on a labelled item: who gave which class (``annotator`` falls back to the source)."""

    item_id: str
    annotator: str
    label: str
    label_id: int


@dataclass(frozen=True)
class DueSecondLook:
    """A second look due for delivery: the item, its image, who already answered it; ``look``: the item's how-many-th."""

    id: int
    look: int
    item_id: str
    model_version: str
    attempts: int
    not_for: list[str]  # JSON column: annotator ids
    image_path: str | None


@dataclass(frozen=True)
class SecondLook:
    """One second look at an item, as asked (:mod:`app.store.checks`): its history row."""

    id: int
    item_id: str
    look: int  # 1: the item's first second look, 2: the next, ...
    split: str  # training | holdout
    reason: str  # suspect | tie
    label: str | None  # the label in doubt when it was asked
    model_version: str  # the version whose checks asked for it
    status: str  # pending | sent | labelled | failed
    not_for: list[str]  # who had answered when it was asked
    ls_task_id: int | None
