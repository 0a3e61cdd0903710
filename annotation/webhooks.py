"""Label Studio webhook bodies -> :class:`LabelEvent` records, checked against Label Studio itself.

No event is believed on its word. The service's webhook endpoints record a body and answer at once (Label Studio
without Redis delivers inside the annotator's request, with a 1 s timeout); the label job turns each recorded body
into events with :func:`verify_event`, which takes only ids from the body: the annotation is read back from Label
Studio with juicer's own token, its label and time are Label Studio's, and the item is found by juicer's own
task-to-item link (the caller's ``item_of``), never by the body's ``task.data.item_id``. :func:`check_secret` (the
``X-Juicer-Secret`` header) is an anti-noise filter, not a proof: every project member can read the secret in
Label Studio's webhook list.
"""

from __future__ import annotations

import hmac
import logging
from datetime import datetime, timezone
from typing import Any, Callable, Mapping

from annotation.errors import EventNotConfirmedError, WebhookPayloadError
from annotation.labelconfig import chosen_label
from annotation.models import Annotation, LabelEvent, Task

logger = logging.getLogger(__name__)

#: The header Label Studio sends the shared secret in (set by :meth:`LabelStudioDesk.register_webhook`).
SECRET_HEADER = "X-Juicer-Secret"
#: The actions juicer registers for and understands.
ANNOTATION_ACTIONS = ("ANNOTATION_CREATED", "ANNOTATION_UPDATED", "ANNOTATIONS_DELETED")
#: The key bodies recorded before every event was verified carried when they came without credentials (ignored now).
LEGACY_UNVERIFIED = "juicer_verify"


def annotation_label(result: Any) -> str | None:
    """The chosen class in an annotation's ``result`` list, or None when it holds no choice (empty).

    juicer's own Choices region, else the first choices region: a project that uses juicer as its ML backend
    names its control as it likes (its config has one Choices, see :mod:`annotation.labelconfig`).
    """
    return chosen_label(result)


def parse_time(value: Any) -> datetime:
    """Label Studio's ISO-8601 timestamp ("...Z") as an aware datetime; now (UTC) when absent.

    Raises :class:`WebhookPayloadError` for a value that is not an ISO-8601 time.
    """
    if isinstance(value, str) and value:
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError as exc:
            raise WebhookPayloadError(f"timestamp {value[:40]!r} is not ISO 8601") from exc
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)
    if value not in (None, ""):
        raise WebhookPayloadError(f"timestamp {str(value)[:40]!r} is not an ISO 8601 string")
    return datetime.now(timezone.utc)


def _int_id(value: Any, what: str) -> int:
    """An id Label Studio sends as an integer; a :class:`WebhookPayloadError` for anything else."""
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise WebhookPayloadError(f"{what} must be an integer, not {type(value).__name__}")
    try:
        return int(value)
    except ValueError as exc:
        raise WebhookPayloadError(f"{what} must be an integer, not {str(value)[:40]!r}") from exc


def is_completed(annotation: Mapping[str, Any]) -> bool:
    """True for a submitted answer: not skipped/cancelled and holding a choice."""
    return not annotation.get("was_cancelled") and annotation_label(annotation.get("result")) is not None


def _item_id(task: Any) -> str | None:
    if isinstance(task, Mapping) and isinstance(task.get("data"), Mapping):
        value = task["data"].get("item_id")
        return None if value is None else str(value)
    return None


def annotator_of(annotation: Mapping[str, Any]) -> str:
    """Who made an annotation: the Label Studio user id as text ("" if absent), whether or not the user is expanded."""
    user = annotation.get("completed_by")
    if isinstance(user, Mapping):  # some endpoints expand the user
        user = user.get("id")
    return "" if user is None else str(user)


def annotation_record(raw: Mapping[str, Any], task_id: Any = None) -> Annotation:
    """An annotation's JSON (a webhook's ``annotation``, or ``/api/annotations/<id>``) as an :class:`Annotation`.

    ``task_id``: the task's id when the annotation does not name it. Raises :class:`WebhookPayloadError` for an
    id, task id or timestamp of the wrong kind.
    """
    given_task = raw.get("task")
    if given_task is None:
        given_task = task_id
    return Annotation(
        id=_int_id(raw.get("id"), "annotation.id"),
        task_id=None if given_task is None else _int_id(given_task, "annotation.task"),
        label=annotation_label(raw.get("result")),
        annotator=annotator_of(raw),
        at=parse_time(raw.get("updated_at") or raw.get("created_at")),
        cancelled=bool(raw.get("was_cancelled")),
        project_id=_project_id(raw.get("project"), "annotation.project"),
    )


def _project_id(value: Any, what: str) -> int | None:
    """A project id given as an id or as an expanded project object; None when absent."""
    if isinstance(value, Mapping):
        value = value.get("id")
    return None if value is None else _int_id(value, what)


def task_record(raw: Mapping[str, Any]) -> Task:
    """A task's JSON (``/api/tasks/<id>``) as a :class:`Task`; :class:`WebhookPayloadError` for ids of the wrong kind."""
    return Task(id=_int_id(raw.get("id"), "task.id"), project_id=_project_id(raw.get("project"), "task.project"), item_id=_item_id(raw))


def _events(action: str, item_id: str | None, annotation: Annotation) -> list[LabelEvent]:
    """The label events one ANNOTATION_CREATED / _UPDATED / _DELETED makes of ``annotation`` on ``item_id``."""
    if action == "ANNOTATION_DELETED":
        return [LabelEvent(item_id, annotation.task_id, annotation.id, None, annotation.annotator, datetime.now(timezone.utc), "withdrawn")]
    if item_id is None:
        logger.warning("ignoring %s for task %s: it has no item_id, so juicer did not create it", action, annotation.task_id)
        return []
    if annotation.completed:
        return [LabelEvent(item_id, annotation.task_id, annotation.id, annotation.label, annotation.annotator, annotation.at, "set")]
    if action == "ANNOTATION_UPDATED":
        return [LabelEvent(item_id, annotation.task_id, annotation.id, None, annotation.annotator, annotation.at, "withdrawn")]
    return []


def _deleted_ids(payload: Mapping[str, Any]) -> list[int]:
    deleted = payload.get("annotations")
    if not isinstance(deleted, list):
        raise WebhookPayloadError("ANNOTATIONS_DELETED webhook without an 'annotations' list")
    return [_int_id(a["id"], "annotations[].id") for a in deleted if isinstance(a, Mapping) and a.get("id") is not None]


def _claimed(payload: Mapping[str, Any]) -> tuple[str, Mapping[str, Any], Any]:
    """The action, the annotation object and the task of a single-annotation event (raises when there is none)."""
    action = payload["action"]
    annotation = payload.get("annotation")
    if not isinstance(annotation, Mapping) or annotation.get("id") is None:
        raise WebhookPayloadError(f"{action} webhook without an 'annotation' object: was it sent with send_payload?")
    return action, annotation, payload.get("task")


def _check_event(payload: Any) -> None:
    if not isinstance(payload, Mapping) or not isinstance(payload.get("action"), str):
        raise WebhookPayloadError(
            "webhook body is not a Label Studio event (no 'action'): check the webhook URL points at juicer's endpoint"
        )


def parse_webhook(payload: Mapping[str, Any]) -> list[LabelEvent]:
    """The label events in one webhook body; [] for actions juicer does not track or answers that are not ours.

    ANNOTATION_CREATED with a choice -> "set"; skipped or empty -> nothing. ANNOTATION_UPDATED with a choice ->
    "set"; emptied or cancelled -> "withdrawn". ANNOTATIONS_DELETED / ANNOTATION_DELETED -> "withdrawn" (the
    plural carries annotation ids only, so ``item_id``/``task_id`` are None there). Raises
    :class:`WebhookPayloadError` for a body that is not a Label Studio event.
    """
    _check_event(payload)
    action = payload["action"]
    if action == "ANNOTATIONS_DELETED":
        now = datetime.now(timezone.utc)
        return [LabelEvent(None, None, annotation_id, None, "", now, "withdrawn") for annotation_id in _deleted_ids(payload)]
    if action not in ("ANNOTATION_CREATED", "ANNOTATION_UPDATED", "ANNOTATION_DELETED"):
        return []
    action, annotation, task = _claimed(payload)
    return _events(action, _item_id(task), annotation_record(annotation, task.get("id") if isinstance(task, Mapping) else None))


def verify_event(
    payload: Mapping[str, Any], read_annotation: Callable[[int], Annotation | None] | None, item_of: Callable[[Annotation], str]
) -> list[LabelEvent]:
    """The label events of a recorded webhook body, as Label Studio holds them now (any body, from either door).

    Only the annotation ids and the task id are taken from the body. Each annotation is read back with
    ``read_annotation`` (the desk's ``get_annotation``, juicer's own token); its label, annotator and time are
    Label Studio's (a body dated 2099 pins nothing); its item is ``item_of(annotation)``: juicer's own link from
    the annotation's task to an item, which raises :class:`~annotation.errors.EventNotServedError` for a task of a
    project juicer does not serve. A deletion counts only for annotations Label Studio no longer holds, and
    withdraws only what juicer recorded under those annotation ids. A forged body can at most make juicer look a
    real annotation up.

    Raises :class:`EventNotConfirmedError` when nothing in it holds (or there is no Label Studio to ask),
    :class:`WebhookPayloadError` for a body that is not an event, and the desk's
    :class:`~annotation.errors.AnnotationError` when Label Studio cannot be asked (retryable: try later).
    """
    checked = {key: value for key, value in payload.items() if key != LEGACY_UNVERIFIED} if isinstance(payload, Mapping) else payload
    _check_event(checked)
    if read_annotation is None:
        raise EventNotConfirmedError("no Label Studio to confirm the event with (set label_studio.url)")
    action = checked["action"]
    now = datetime.now(timezone.utc)
    if action == "ANNOTATIONS_DELETED":
        gone = [annotation_id for annotation_id in _deleted_ids(checked) if read_annotation(annotation_id) is None]
        if not gone:
            raise EventNotConfirmedError("Label Studio still holds every annotation the deletion names")
        return [LabelEvent(None, None, annotation_id, None, "", now, "withdrawn") for annotation_id in gone]
    if action not in ("ANNOTATION_CREATED", "ANNOTATION_UPDATED", "ANNOTATION_DELETED"):
        return []
    action, claimed, task = _claimed(checked)
    annotation_id = _int_id(claimed["id"], "annotation.id")
    claimed_task = claimed.get("task") if claimed.get("task") is not None else task.get("id") if isinstance(task, Mapping) else None
    claimed_task = None if claimed_task is None else _int_id(claimed_task, "annotation.task")
    current = read_annotation(annotation_id)
    if action == "ANNOTATION_DELETED":
        if current is not None:
            raise EventNotConfirmedError(f"annotation {annotation_id} still exists in Label Studio")
        return [LabelEvent(None, None, annotation_id, None, "", now, "withdrawn")]
    if current is None or current.task_id is None or (claimed_task is not None and current.task_id != claimed_task):
        raise EventNotConfirmedError(f"the event for annotation {annotation_id} does not match Label Studio's own record")
    return _events(action, item_of(current), current)


def check_secret(headers: Mapping[str, str], secret: str) -> bool:
    """True when ``headers`` carry ``secret`` in :data:`SECRET_HEADER` (any case), compared in constant time."""
    if not secret:
        return False
    wanted = SECRET_HEADER.lower()
    for name, value in headers.items():
        if name.lower() == wanted:
            return hmac.compare_digest(str(value).encode(), secret.encode())
    return False
