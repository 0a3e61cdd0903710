"""The holdout juicer reserves and annotators label blind: when to reserve, how many holdout tasks to queue.

When the labelled holdout given (the demo's, or one imported or posted by the user) holds fewer than
``service.holdout.min_labels`` items, juicer reserves one from the unlabelled pool (a seeded uniform draw,
:meth:`app.store.Store.reserve_holdout`; the given items count towards its size, so the two are used
together). Its items go to Label Studio as tasks of their own with no prediction (a guess anchors the
annotator), interleaved with the active picks by :func:`holdout_tasks_to_queue`: until ``min_labels`` are in
they come first and as many as needed; after that a small share of each refresh (``share`` of
``review_batch_size``, about 1 task in 10) keeps the holdout growing with the pool while nine labels in ten
still go to training. Annotators' holdout labels never train: training reads the seed and pool labels only.

A Label Studio project juicer did not create, connected through the ML-backend door (``/label-studio-ml/setup``
remembers it, :func:`remember_connected_project`), is where its annotators work: :func:`deliver_holdout_elsewhere`
imports the due holdout items there as tasks of their own, with no prediction, under the project's own image key,
using juicer's Label Studio token (``label_studio.token``), and links each task juicer created to its item. The
ML backend answers no prediction for those tasks, and an annotation counts for the holdout only on the very task
juicer created (a member's task showing the same image does not: :func:`app.store.labels.delivered_blind`). When
juicer cannot create tasks there (no token, no access, no local-files serving), :func:`holdout_status` says why and
what to do (``/label-studio-ml/health``, the report), and the holdout tasks go to juicer's own project meanwhile.
"""

from __future__ import annotations

import logging
import math
from pathlib import PurePosixPath
from typing import TYPE_CHECKING

from annotation.errors import AnnotationError, LabelStudioRejected
from app.store import Store, utcnow
from config.settings import HoldoutSettings, ServiceSettings

if TYPE_CHECKING:  # the desk pulls in the SDK
    from annotation.desk import LabelStudioDesk
    from annotation.models import Project

logger = logging.getLogger(__name__)

#: Store meta: the Label Studio projects juicer did not create that connected through the ML-backend door,
#: ``{project id: {"image_key": str, "connected_at": ISO time}}``.
CONNECTED_PROJECTS = "ml-backend-projects"
#: Store meta: how delivering the holdout to the newest connected project went: ``{"project", "delivered", "error",
#: "do", "at"}`` (``error`` None when it worked).
ELSEWHERE_STATE = "holdout-elsewhere"


def holdout_tasks_to_queue(n_labelled: int, n_open: int, n_available: int, min_labels: int, per_refresh: int) -> int:
    """Holdout tasks to queue now: enough open ones to reach ``min_labels`` (priority), then ``per_refresh``.

    Open tasks (queued, not answered yet) count, so tasks annotators leave alone never pile up.
    """
    wanted_open = max(min_labels - n_labelled, per_refresh)
    return max(0, min(wanted_open - n_open, n_available))


def per_refresh(holdout: HoldoutSettings, review_batch_size: int) -> int:
    """Holdout tasks a refresh adds once the minimum is in: ``share`` of the batch, at least one when on."""
    return math.ceil(holdout.share * review_batch_size) if holdout.share > 0 else 0


def reserve_holdout(store: Store, holdout: HoldoutSettings, n_classes: int) -> list[str]:
    """Reserve (or top up) the holdout from the pool when the given one is too small; returns the ids moved."""
    if not holdout.reserve:
        return []
    counts = store.holdout_counts()
    given = counts.n_items - len(store.reserved_holdout())
    if given >= holdout.min_labels:
        return []  # a labelled holdout was given (the demo, an import): it is used instead
    moved = store.reserve_holdout(holdout.target_size(n_classes), holdout.seed, holdout.max_pool_share)
    if moved:
        logger.info("holdout: %d pool items reserved (seed %d), never queried, never trained on", len(moved), holdout.seed)
    return moved


def queue_holdout_tasks(store: Store, holdout: HoldoutSettings, review_batch_size: int) -> int:
    """Queue the holdout items annotators should label next, blind; returns how many were queued."""
    counts = store.holdout_counts()
    n_available = counts.n_items - counts.n_labelled - counts.n_open
    wanted = holdout_tasks_to_queue(
        counts.n_labelled, counts.n_open, n_available, holdout.min_labels, per_refresh(holdout, review_batch_size)
    )
    queued = store.queue_holdout_reviews(store.unqueued_holdout(wanted)) if wanted else 0
    if queued:
        logger.info("review queue: %d holdout items queued blind (%d labelled, %d open)", queued, counts.n_labelled, counts.n_open)
    return queued


# -- the holdout in a project juicer did not create ---------------------------------------------------
def remember_connected_project(store: Store, project_id: str, image_key: str) -> None:
    """Record a project connected through the ML-backend door (its ``/setup``); the newest one gets the holdout."""
    connected = dict(store.get_meta(CONNECTED_PROJECTS) or {})
    connected.pop(str(project_id), None)  # re-connecting makes it the newest again
    connected[str(project_id)] = {"image_key": image_key, "connected_at": utcnow().isoformat()}
    store.set_meta(CONNECTED_PROJECTS, connected)


def holdout_project(store: Store, own_project: Project | None) -> tuple[int, str] | None:
    """(project id, its image key) of the newest connected project that is not juicer's own, or None."""
    connected = store.get_meta(CONNECTED_PROJECTS) or {}
    for project_id, info in reversed(list(connected.items())):
        if project_id.isdigit() and (own_project is None or int(project_id) != own_project.id):
            return int(project_id), str(info["image_key"])
    return None


def _what_to_do(project_id: int, exc: AnnotationError | None, own_project: Project | None) -> str:
    meanwhile = f"; meanwhile holdout tasks go to juicer's own project {own_project.id}" if own_project is not None else ""
    if exc is None:
        return (f"set label_studio.url and label_studio.token to a Label Studio user with access to project {project_id}"
                f"{meanwhile}")  # fmt: skip
    if isinstance(exc, LabelStudioRejected):
        return (f"make the user of label_studio.token a member of project {project_id}'s organization (or set "
                f"label_studio.token to one who is), and let Label Studio serve juicer's images (local-files serving "
                f"of juicer's files folder){meanwhile}")  # fmt: skip
    return f"nothing: juicer tries again at every delivery{meanwhile}"


def deliver_holdout_elsewhere(store: Store, desk: LabelStudioDesk | None, own_project: Project | None,
                              service: ServiceSettings) -> int:  # fmt: skip
    """Send the due holdout tasks, blind, to the newest connected project juicer did not create; how many went.

    Records how it went (:data:`ELSEWHERE_STATE`) for :func:`holdout_status`. Nothing happens when no such project
    is connected; on a failure the tasks stay due, and juicer's own outbox (:mod:`app.core.delivery`) sends them to
    its own project.
    """
    from annotation.models import ReviewRequest

    target = holdout_project(store, own_project)
    if target is None:
        return 0
    project_id, image_key = target
    if desk is None:
        _record(store, project_id, 0, "juicer has no Label Studio token", _what_to_do(project_id, None, own_project))
        return 0
    delivered = 0
    while True:
        due = store.due_reviews(service.deliver_batch_size, split="holdout")
        if not due:
            break
        requests = [
            ReviewRequest(item_id=row.item_id, image=str(PurePosixPath(row.image_path).relative_to("images")), label=None,
                          score=0.0, model_version=row.model_version, blind=True)
            for row in due
        ]  # fmt: skip
        try:
            tasks = desk.send_blind_elsewhere(project_id, image_key, requests)
        except AnnotationError as exc:
            logger.warning("holdout: cannot create tasks in project %s: %s", project_id, exc)
            _record(store, project_id, delivered, str(exc), _what_to_do(project_id, exc, own_project))
            return delivered
        # The link first: an annotation arriving before the outbox row is marked must find its item.
        store.link_served_tasks(str(project_id), {task.task_id: task.item_id for task in tasks})
        delivered += store.mark_delivered({task.item_id: task.task_id for task in tasks},
                                          {row.item_id: row.model_version for row in due})  # fmt: skip
        if len(due) < service.deliver_batch_size:
            break
    if delivered:
        logger.info("holdout: %d tasks created blind in Label Studio project %s", delivered, project_id)
    previous = store.get_meta(ELSEWHERE_STATE) or {}
    total = delivered + (int(previous.get("delivered", 0)) if previous.get("project") == project_id else 0)
    _record(store, project_id, total, None, None)
    return delivered


def _record(store: Store, project_id: int, delivered: int, error: str | None, do: str | None) -> None:
    previous = store.get_meta(ELSEWHERE_STATE) or {}
    if (previous.get("project"), previous.get("delivered"), previous.get("error")) == (project_id, delivered, error):
        return  # nothing new: no write at every delivery tick
    store.set_meta(ELSEWHERE_STATE, {"project": project_id, "delivered": delivered, "error": error, "do": do,
                                     "at": utcnow().isoformat()})  # fmt: skip


def holdout_status(store: Store) -> str | None:
    """One line on the holdout in a connected project (None when none is connected): where its tasks go, or why
    juicer cannot create them there and what to do."""
    state = store.get_meta(ELSEWHERE_STATE)
    if not state:
        return None
    if state.get("error"):
        return f"holdout: cannot create tasks in project {state['project']}: {state['error']}; do {state['do']}"
    return f"holdout: {state['delivered']} tasks created blind in project {state['project']}"
