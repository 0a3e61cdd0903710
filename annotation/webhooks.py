"""Label Studio webhook bodies -> :class:`LabelEvent` records, and the shared-secret check.

Pure functions: the service's webhook endpoint calls :func:`check_secret` then :func:`parse_webhook`, records
the events and answers at once (Label Studio without Redis delivers inside the annotator's request, with a
1 s timeout).
"""

from __future__ import annotations

import hmac
import logging
from datetime import datetime, timezone
from typing import Any, Mapping

from annotation.errors import WebhookPayloadError
from annotation.models import LabelEvent

logger = logging.getLogger(__name__)

#: The header Label Studio sends the shared secret in (set by :meth:`LabelStudioDesk.register_webhook`).
SECRET_HEADER = "X-Juicer-Secret"
#: Names in the labelling config: the Choices control and the Image object it labels.
CHOICES_NAME = "label"
IMAGE_NAME = "image"
#: The actions juicer registers for and understands.
ANNOTATION_ACTIONS = ("ANNOTATION_CREATED", "ANNOTATION_UPDATED", "ANNOTATIONS_DELETED")


def annotation_label(result: Any) -> str | None:
    """The chosen class in an annotation's ``result`` list, or None when it holds no choice (empty)."""
    if not isinstance(result, list):
        return None
    for region in result:
        if not isinstance(region, Mapping) or region.get("from_name") != CHOICES_NAME:
            continue
        value = region.get("value")
        choices = value.get("choices") if isinstance(value, Mapping) else None
        if isinstance(choices, list) and choices and isinstance(choices[0], str):
            return choices[0]
    return None


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


def parse_webhook(payload: Mapping[str, Any]) -> list[LabelEvent]:
    """The label events in one webhook body; [] for actions juicer does not track or answers that are not ours.

    ANNOTATION_CREATED with a choice -> "set"; skipped or empty -> nothing. ANNOTATION_UPDATED with a choice ->
    "set"; emptied or cancelled -> "withdrawn". ANNOTATIONS_DELETED / ANNOTATION_DELETED -> "withdrawn" (the
    plural carries annotation ids only, so ``item_id``/``task_id`` are None there). Raises
    :class:`WebhookPayloadError` for a body that is not a Label Studio event.
    """
    if not isinstance(payload, Mapping) or not isinstance(payload.get("action"), str):
        raise WebhookPayloadError(
            "webhook body is not a Label Studio event (no 'action'): check the webhook URL points at juicer's endpoint"
        )
    action = payload["action"]
    if action == "ANNOTATIONS_DELETED":
        deleted = payload.get("annotations")
        if not isinstance(deleted, list):
            raise WebhookPayloadError("ANNOTATIONS_DELETED webhook without an 'annotations' list")
        now = datetime.now(timezone.utc)
        return [
            LabelEvent(None, None, _int_id(a["id"], "annotations[].id"), None, "", now, "withdrawn")
            for a in deleted
            if isinstance(a, Mapping) and a.get("id") is not None
        ]
    if action not in ("ANNOTATION_CREATED", "ANNOTATION_UPDATED", "ANNOTATION_DELETED"):
        return []
    annotation = payload.get("annotation")
    if not isinstance(annotation, Mapping) or annotation.get("id") is None:
        raise WebhookPayloadError(f"{action} webhook without an 'annotation' object: was it sent with send_payload?")
    task = payload.get("task")
    item_id = _item_id(task)
    task_id = annotation.get("task")
    if task_id is None and isinstance(task, Mapping):
        task_id = task.get("id")
    task_id = None if task_id is None else _int_id(task_id, "annotation.task")
    annotation_id = _int_id(annotation["id"], "annotation.id")
    at = parse_time(annotation.get("updated_at") or annotation.get("created_at"))
    if action == "ANNOTATION_DELETED":
        return [LabelEvent(item_id, task_id, annotation_id, None, annotator_of(annotation), datetime.now(timezone.utc), "withdrawn")]
    if item_id is None:
        logger.warning("ignoring %s for task %s: it has no item_id, so juicer did not create it", action, task_id)
        return []
    if is_completed(annotation):
        label = annotation_label(annotation.get("result"))
        return [LabelEvent(item_id, task_id, annotation_id, label, annotator_of(annotation), at, "set")]
    if action == "ANNOTATION_UPDATED":
        return [LabelEvent(item_id, task_id, annotation_id, None, annotator_of(annotation), at, "withdrawn")]
    return []


def check_secret(headers: Mapping[str, str], secret: str) -> bool:
    """True when ``headers`` carry ``secret`` in :data:`SECRET_HEADER` (any case), compared in constant time."""
    if not secret:
        return False
    wanted = SECRET_HEADER.lower()
    for name, value in headers.items():
        if name.lower() == wanted:
            return hmac.compare_digest(str(value).encode(), secret.encode())
    return False
