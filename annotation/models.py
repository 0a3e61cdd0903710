"""juicer's own records for the annotators' desk; the SDK's objects never leave :mod:`annotation`."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal, Mapping

LabelAction = Literal["set", "withdrawn"]


def version_name(seq: int) -> str:
    """The name of the ``seq``-th trained version (``7`` -> ``v0007``); :func:`version_seq` reads it back."""
    return f"v{seq:04d}"


def version_seq(model_version: str | None) -> int | None:
    """The training sequence number in a model version's name: juicer names every version ``v{seq:04d}``
    (``v0007`` -> 7; :meth:`app.core.training.Trainer.retrain`); None for any other name (the cold start's
    ``none``, someone else's model). The one parser of the name: the serving swap and the desk both order by it."""
    match = re.fullmatch(r"v(\d+)", model_version or "")
    return int(match.group(1)) if match else None


def version_rank(model_version: str | None) -> int:
    """Where a model version comes in training order (:func:`version_seq`); any other name ranks before them all
    (-1)."""
    seq = version_seq(model_version)
    return -1 if seq is None else seq


@dataclass(frozen=True)
class Project:
    """A Label Studio project whose labelling config is one image ``Choices`` over ``classes``."""

    id: int
    title: str
    classes: tuple[str, ...]
    url: str  # where a person opens it in the browser


@dataclass(frozen=True)
class ReviewRequest:
    """One item to put in front of annotators, with the model's guess as the pre-annotation.

    ``image`` is a path relative to the desk's ``files_root`` (served through Label Studio's local-files
    storage) or an ``http(s)://`` URL. ``label`` None sends the item without a pre-selected choice. ``blind``
    sends it with no prediction at all (a holdout item: a guess would anchor the annotator and bias the measure);
    its task data says ``"kind": "holdout"`` for the annotators' view. ``second_look`` asks for another answer on an
    item that has a task already: a new task of its own, blind, its data saying ``"kind": "second-look"`` and
    ``not_for`` (the annotators who answered it already: Label Studio's open-source edition cannot assign a task).
    """

    item_id: str
    image: str
    label: str | None
    score: float
    model_version: str
    blind: bool = False
    second_look: bool = False
    not_for: tuple[str, ...] = ()
    look: int = 1  # a second look's number for its item (each a task of its own: a tie is asked again)


@dataclass(frozen=True)
class ReviewTask:
    """The Label Studio task that holds an item; ``created`` False when an existing task was updated."""

    item_id: str
    task_id: int
    created: bool


@dataclass(frozen=True)
class LabelEvent:
    """A person's answer for an item, or its withdrawal.

    ``action`` "set": ``label`` is the annotator's current answer (an update replaces the earlier one with the
    same ``annotation_id``). "withdrawn": the annotation was deleted (or emptied/skipped); forget what
    ``annotation_id`` said. ``annotator`` is the Label Studio user id as a string, identical in pulls and
    webhooks (:meth:`annotation.desk.LabelStudioDesk.annotator_emails` names them). ``item_id`` and ``task_id``
    are None only in withdrawals parsed from an ``ANNOTATIONS_DELETED`` webhook, which carries the annotation id
    alone (and ``annotator`` ""): match those on ``annotation_id``.
    """

    item_id: str | None
    task_id: int | None
    annotation_id: int
    label: str | None
    annotator: str
    at: datetime
    action: LabelAction


@dataclass(frozen=True)
class Annotation:
    """One annotation as Label Studio holds it: whose answer, on which task, choosing which class (None: empty).

    ``cancelled`` is Label Studio's ``was_cancelled`` (the task was skipped); ``at`` its last update;
    ``project_id`` the project of its task (None when Label Studio did not say).
    """

    id: int
    task_id: int | None
    label: str | None
    annotator: str
    at: datetime
    cancelled: bool = False
    project_id: int | None = None

    @property
    def completed(self) -> bool:
        """A submitted answer: not skipped and holding a choice."""
        return not self.cancelled and self.label is not None


@dataclass(frozen=True)
class Task:
    """One Label Studio task as Label Studio holds it: its project, and the juicer item its data names (if any).

    ``item_id`` is the task data's ``item_id``: juicer writes it into the tasks it creates, but any member who may
    import tasks into the project can write one too, so it is trusted only for juicer's own project.
    """

    id: int
    project_id: int | None
    item_id: str | None


@dataclass(frozen=True)
class SeenAnnotation:
    """What the last pull reported for one annotation (kept in the cursor to detect updates and deletions)."""

    item_id: str
    task_id: int
    label: str
    annotator: str
    updated_at: str  # Label Studio's ISO timestamp, compared as given


@dataclass(frozen=True)
class PullCursor:
    """Where :meth:`LabelStudioDesk.pull_labels` stopped: the completed annotations it has reported.

    Store it with :meth:`to_json` and restore it with :meth:`from_json`; None means "from the beginning".
    """

    project_id: int
    seen: Mapping[int, SeenAnnotation] = field(default_factory=dict)

    def to_json(self) -> str:
        """A JSON string that :meth:`from_json` turns back into an equal cursor."""
        return json.dumps(
            {
                "project_id": self.project_id,
                "seen": {str(k): [v.item_id, v.task_id, v.label, v.annotator, v.updated_at] for k, v in self.seen.items()},
            },
            separators=(",", ":"),
        )

    @classmethod
    def from_json(cls, text: str) -> "PullCursor":
        """Rebuild a cursor stored by :meth:`to_json`; ValueError if ``text`` is not one."""
        try:
            raw = json.loads(text)
            seen = {int(k): SeenAnnotation(str(v[0]), int(v[1]), str(v[2]), str(v[3]), str(v[4])) for k, v in raw["seen"].items()}
            return cls(project_id=int(raw["project_id"]), seen=seen)
        except (ValueError, KeyError, TypeError, IndexError, AttributeError) as exc:
            raise ValueError(f"not a pull cursor stored by PullCursor.to_json: {exc}") from exc
