"""Label intake: what annotators answer in Label Studio becomes labels in the store, by one path.

Labels arrive two ways, and both end in :func:`apply_events`:

- **webhooks.** Either HTTP door records the body and answers at once; :func:`process_webhook_events` turns each
  recorded body into :class:`~annotation.models.LabelEvent` records (:func:`annotation.webhooks.verify_event`
  reads back from Label Studio a body that came without credentials) and applies them, one body at a time;
- **the pull.** :func:`pull_labels` asks Label Studio for every completed annotation since the stored cursor,
  the safety net for webhooks that never arrived.

:func:`apply_events` drops a label that is not one of the classes and hands the rest to
:meth:`app.store.Store.apply_label_events`, which stores them idempotently.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Sequence

from annotation.errors import AnnotationError
from app.store import Store

if TYPE_CHECKING:  # the desk pulls in the SDK
    from annotation.desk import LabelStudioDesk
    from annotation.models import LabelEvent, Project

logger = logging.getLogger(__name__)

PULL_CURSOR = "label-studio-pull"  # the store's cursor name for the pull


def apply_events(store: Store, events: Sequence[LabelEvent], classes: Sequence[str]) -> int:
    """Store ``events`` as labels (a label outside ``classes`` is logged and ignored); how many labels changed."""
    accepted = []
    for event in events:
        if event.action == "set" and event.label not in classes:
            logger.warning("label %r for item %s is not one of the classes: ignored", event.label, event.item_id)
            continue
        accepted.append(event)
    return store.apply_label_events(accepted)


def process_webhook_events(store: Store, desk: LabelStudioDesk | None, classes: Sequence[str]) -> int:
    """Apply recorded webhook events as labels, one at a time; returns how many labels changed.

    An event that cannot be used (a malformed body, one Label Studio does not confirm, or anything that raises
    while it is applied) is marked with its error and skipped: the events behind it are applied, none waits
    behind a poison one. When Label Studio cannot be asked to confirm one, processing stops until the next run.
    """
    from annotation.webhooks import verify_event

    read_annotation = None if desk is None else lambda annotation_id: desk.get_annotation(annotation_id)
    changed = 0
    for event in store.pending_events():
        try:
            changed += apply_events(store, verify_event(event.payload, read_annotation), classes)
        except AnnotationError as exc:
            if exc.retryable:
                logger.warning("webhook event %s not verified yet (%s); trying again later", event.id, exc)
                break
            error = f"{type(exc).__name__}: {exc}"
        except Exception as exc:  # noqa: BLE001 - one poison event must not block the rest; it is kept, marked
            error = f"{type(exc).__name__}: {exc}"
        else:
            store.mark_event(event.id)
            continue
        logger.warning("webhook event %s unusable, marked failed: %s", event.id, error)
        store.mark_event(event.id, error=error)
    return changed


def pull_labels(store: Store, desk: LabelStudioDesk | None, project: Project | None, classes: Sequence[str]) -> int:
    """Pull completed annotations since the saved cursor (the safety net for missed webhooks); labels changed."""
    from annotation.models import PullCursor

    if desk is None or project is None:
        return 0
    saved = store.get_cursor(PULL_CURSOR)
    cursor = None
    if saved:
        try:
            cursor = PullCursor.from_json(saved)
        except ValueError:
            logger.warning("stored pull cursor unreadable; pulling from the beginning")
        if cursor is not None and cursor.project_id != project.id:
            cursor = None
    events, cursor = desk.pull_labels(project, cursor)
    changed = apply_events(store, events, classes)
    store.set_cursor(PULL_CURSOR, cursor.to_json())
    if changed:
        logger.info("pull found %d label changes the webhooks had not brought", changed)
    return changed


def connect_label_studio(
    desk: LabelStudioDesk | None, classes: Sequence[str], title: str, webhook_url: str | None, webhook_secret: str
) -> Project | None:
    """Find or create the Label Studio project and register the webhook labels come through; None while it is away.

    Predictions are served meanwhile and review tasks wait in the outbox; the caller tries again later.
    """
    if desk is None:
        return None
    try:
        project = desk.ensure_project(list(classes), title)
        if webhook_url:
            desk.register_webhook(project, webhook_url, webhook_secret)
    except AnnotationError as exc:
        logger.warning("Label Studio is not reachable (%s): serving predictions, review tasks wait in the outbox", exc)
        return None
    logger.info("connected to Label Studio project %r (id %s)", project.title, project.id)
    return project
