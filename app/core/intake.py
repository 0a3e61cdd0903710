"""Label intake: what annotators answer in Label Studio becomes labels in the store, by one path.

Labels arrive two ways, and both end in :func:`apply_events`:

- **webhooks.** Either HTTP door records the body and answers at once; :func:`process_webhook_events` turns each
  recorded body into :class:`~annotation.models.LabelEvent` records and applies them, one body at a time. No body
  is believed on its word, whichever door it came through and whatever secret it carried: each annotation is read
  back from Label Studio with juicer's own token (:func:`annotation.webhooks.verify_event`), and its item is
  juicer's own link from the task (:func:`task_item`), never the body's ``item_id``. Events on tasks of projects
  juicer does not serve are dropped and counted (``juicer_webhook_events{state="dropped"}``);
- **the pull.** :func:`pull_labels` asks Label Studio for every completed annotation since the stored cursor,
  the safety net for webhooks that never arrived.

:func:`apply_events` drops a label that is not one of the classes and hands the rest to
:meth:`app.store.Store.apply_label_events`, which stores them idempotently.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Callable, Sequence

from annotation.errors import AnnotationError, EventNotServedError
from app.core.classes import HOW_TO_ADD
from app.store import Store

if TYPE_CHECKING:  # the desk pulls in the SDK
    from annotation.desk import LabelStudioDesk
    from annotation.models import Annotation, LabelEvent, Project

logger = logging.getLogger(__name__)

PULL_CURSOR = "label-studio-pull"  # the store's cursor name for the pull


def apply_events(store: Store, events: Sequence[LabelEvent], classes: Sequence[str]) -> int:
    """Store ``events`` as labels (a label outside ``classes`` is logged and ignored); how many labels changed."""
    accepted = []
    for event in events:
        if event.action == "set" and event.label not in classes:
            logger.warning("label %r for item %s is not one of the classes: ignored (to make it one, %s)",
                           event.label, event.item_id, HOW_TO_ADD)
            continue
        accepted.append(event)
    return store.apply_label_events(accepted)


def task_item(store: Store, desk: LabelStudioDesk, project: Project | None) -> Callable[[Annotation], str]:
    """``item_of`` for :func:`annotation.webhooks.verify_event`: the juicer item of an annotation's task, by juicer's
    own links only; raises :class:`~annotation.errors.EventNotServedError` for a task of a project juicer does not serve.

    juicer's own project: the review task juicer delivered as that Label Studio task (the outbox) and nothing else:
    a member can import tasks into the project with any ``item_id`` in their data, so task data names no item. A
    project connected through the ML backend: the task juicer linked when it predicted it (``served_tasks``).
    """

    def item_of(annotation: Annotation) -> str:
        task_id = annotation.task_id
        assert task_id is not None  # verify_event confirmed the annotation's task
        project_id = annotation.project_id
        task = None
        if project_id is None:  # Label Studio did not say: the task does
            task = desk.get_task(task_id)
            project_id = None if task is None else task.project_id
        if project is not None and project_id == project.id:
            item_id = store.review_item_of_task(task_id)
            if item_id is not None:
                return item_id
            raise EventNotServedError(f"task {task_id} of juicer's project {project_id} is not one juicer delivered")
        linked = store.served_task_items(str(project_id), [task_id]).get(task_id) if project_id is not None else None
        if linked is not None:
            return linked
        if project is None:  # not connected yet: juicer's own project cannot be told apart; ask again later
            raise AnnotationError("juicer is not connected to its Label Studio project yet", retryable=True)
        raise EventNotServedError(f"task {task_id} of project {project_id}: juicer serves no such task")

    return item_of


def process_webhook_events(store: Store, desk: LabelStudioDesk | None, classes: Sequence[str], project: Project | None = None) -> int:
    """Apply recorded webhook events as labels, oldest first, one at a time; returns how many labels changed.

    Every event is checked against Label Studio (see the module docstring). An event that cannot be used (a
    malformed body, one Label Studio does not confirm, or anything that raises while it is applied) is marked with
    its error and skipped: the events behind it are applied, none waits behind a poison one; one from a project
    juicer does not serve is also counted as dropped. When Label Studio cannot be asked, processing stops until
    the next run.
    """
    from annotation.webhooks import verify_event

    read_annotation = None if desk is None else desk.get_annotation
    item_of = (lambda annotation: "") if desk is None else task_item(store, desk, project)
    changed = 0
    for event in store.pending_events():
        dropped = False
        try:
            changed += apply_events(store, verify_event(event.payload, read_annotation, item_of), classes)
        except AnnotationError as exc:
            if exc.retryable:
                logger.warning("webhook event %s not verified yet (%s); trying again later", event.id, exc)
                break
            dropped = isinstance(exc, EventNotServedError)
            error = f"{type(exc).__name__}: {exc}"
        except Exception as exc:  # noqa: BLE001 - one poison event must not block the rest; it is kept, marked
            error = f"{type(exc).__name__}: {exc}"
        else:
            store.mark_event(event.id)
            continue
        logger.warning("webhook event %s %s: %s", event.id, "dropped" if dropped else "unusable, marked failed", error)
        store.mark_event(event.id, error=error, dropped=dropped)
    return changed


def own_tasks_only(store: Store, events: Sequence[LabelEvent]) -> list[LabelEvent]:
    """The pulled events on tasks juicer delivered, for the item it delivered them as; the rest are logged and dropped
    (a member may import a task naming any item into juicer's project: its task data is not juicer's word)."""
    delivered = store.review_items_of_tasks([event.task_id for event in events if event.task_id is not None])
    kept = [event for event in events if event.task_id is not None and delivered.get(event.task_id) == event.item_id]
    if len(kept) < len(events):
        logger.warning("pull: %d answers on tasks juicer did not deliver (or naming another item) dropped", len(events) - len(kept))
    return kept


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
    changed = apply_events(store, own_tasks_only(store, events), classes)
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
