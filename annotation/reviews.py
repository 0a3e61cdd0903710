"""Sending review tasks: items in front of annotators with the model's guess as the pre-annotation.

One item, one task. A holdout item (and a second look) goes blind: never a guess (a guess anchors the annotator).
Label Studio's "Label All Tasks" queue (uncertainty sampling) serves only tasks that hold a prediction of the
project's model version while any exist, lowest score first, so a task with no prediction would never be served
once a model exists. A blind task therefore carries a *placeholder* prediction of the current version: an empty
result (nothing pre-selected) scored :data:`BLIND_SCORE`, below every guess, so annotators get it first (juicer
decides how many blind tasks are open: ``app.core.holdout``); each new version gets its placeholders with the
re-scored guesses. New items are bulk-imported with their prediction. An item sent again (every queued item
after each retrain) keeps its task and its labels and gets the new version's prediction, in bulk
(``POST /api/projects/{id}/import/predictions``, a few thousand per call): re-scoring costs a few calls, not one
per task. The older predictions are pruned afterwards, by :meth:`Reviews.prune` (a job of its own: deleting
1,000 predictions costs Label Studio tens of seconds), by model version (``DELETE
/api/projects/{id}/model-versions/``, one call per version), and not all of them: an annotator who has a task
open started from its newest prediction, and the annotation they submit names it (``parent_prediction``; Label
Studio refuses a vanished one). So every version that is one of the two newest predictions of a task nobody has
answered yet is kept (the current one, and the one an editor opened before the last re-score may hold). Tasks
already annotated lose their predictions of pruned versions (their annotations stay; Label Studio sets
``parent_prediction`` to null); juicer's own store keeps every prediction it made.
"""

from __future__ import annotations

import logging
from typing import Any, Iterator, Mapping, Sequence

from annotation.client import BULK_TIMEOUT_FACTOR, PAGE_SIZE, LabelStudioClient
from annotation.errors import LabelStudioUnavailable, ProjectConfigError
from annotation.labelconfig import IMAGE_KEY, JUICER_CONFIG
from annotation.models import Project, ReviewRequest, ReviewTask, version_rank
from annotation.projects import Projects
from annotation.webhooks import annotation_label

logger = logging.getLogger(__name__)

IMPORT_CHUNK = 250  # tasks per bulk task import: keeps each request well inside the timeout
PREDICTION_CHUNK = 2000  # predictions per bulk prediction import
SECOND_LOOK = "second-look"  # the task data's kind of a second look: another task for an item, never a guess
BLIND_KINDS = ("holdout", SECOND_LOOK)  # task data kinds that never carry a guess
#: A blind task's placeholder prediction's score: below any guess's confidence, so Label Studio serves it first.
BLIND_SCORE = -1.0


def task_key(item_id: str, kind: Any = None, look: Any = None) -> str:
    """The task index's key: the item id, or for a second look the item id, the kind and, after the item's first
    second look, its number (each look a task of its own)."""
    if kind != SECOND_LOOK:
        return item_id
    number = int(look) if isinstance(look, (int, str)) and str(look).isdigit() else 1
    return f"{item_id}#{SECOND_LOOK}" + (f"-{number}" if number > 1 else "")


def request_key(request: ReviewRequest) -> str:
    """The task index's key of ``request``."""
    return task_key(request.item_id, SECOND_LOOK if request.second_look else None, request.look)


def prediction_body(request: ReviewRequest) -> dict[str, Any]:
    """The prediction Label Studio stores for ``request`` (no result when it carries no label)."""
    result = JUICER_CONFIG.result(request.label) if request.label is not None else []
    return {"model_version": request.model_version, "score": float(request.score), "result": result}


def placeholder_body(model_version: str) -> dict[str, Any]:
    """A blind task's prediction: nothing pre-selected, scored below every guess (see the module docstring)."""
    return {"model_version": model_version, "score": BLIND_SCORE, "result": []}


def task_body(image_url: str, request: ReviewRequest, model_version: str | None = None) -> dict[str, Any]:
    """The task Label Studio imports for ``request``: with the model's guess, or blind (a holdout item or a second
    look: ``"kind"`` in its data says which, juicer trusts its own outbox link, not this; no guess, only the
    placeholder of ``model_version`` when a model exists)."""
    data: dict[str, Any] = {IMAGE_KEY: image_url, "item_id": request.item_id}
    if request.second_look or request.blind:
        if request.second_look:
            data = {**data, "kind": SECOND_LOOK, "not_for": list(request.not_for), **({"look": request.look} if request.look > 1 else {})}
        else:
            data = {**data, "kind": "holdout"}
        return {"data": data, **({"predictions": [placeholder_body(model_version)]} if model_version else {})}
    return {"data": data, "predictions": [prediction_body(request)]}


def _same_prediction(current: Mapping[str, Any], request: ReviewRequest) -> bool:
    """Whether the stored prediction already says what ``request`` would write."""
    score = current.get("score")
    return (
        current.get("model_version") == request.model_version
        and score is not None
        and abs(float(score) - float(request.score)) < 1e-9
        and annotation_label(current.get("result")) == request.label
    )


class Reviews:
    """Review tasks of juicer's projects on one server."""

    def __init__(self, client: LabelStudioClient, projects: Projects) -> None:
        self.client = client
        self.projects = projects

    def _list_tasks(self, project_id: int, include: str) -> Iterator[dict[str, Any]]:
        """The project's tasks as plain dicts with only the ``include``d fields, a page at a time.

        Raw rather than the SDK's ``tasks.list``: asking for a few fields instead of all of them and skipping the
        SDK's models makes a 1,000-task listing several times faster.
        """
        page, listed = 1, 0
        while True:
            params: dict[str, Any] = {"project": project_id, "fields": "all", "include": include, "page": page, "page_size": PAGE_SIZE}
            body = self.client.request("GET", "/api/tasks/", f"listing tasks of project {project_id}", params=params).json()
            tasks = body.get("tasks") or []
            yield from tasks
            listed += len(tasks)
            if len(tasks) < PAGE_SIZE or listed >= int(body.get("total", listed)):
                return
            page += 1

    def _task_index(self, project_id: int) -> tuple[dict[str, int], set[int], set[int]]:
        """(item id -> task id for every task juicer created in the project, the ids of tasks nobody answered yet,
        those of them that are blind: a holdout item's or a second look's)."""
        index: dict[str, int] = {}
        open_tasks: set[int] = set()
        blind: set[int] = set()
        for task in self._list_tasks(project_id, "id,data,total_annotations,cancelled_annotations"):
            data = task.get("data") or {}
            item_id = data.get("item_id")
            if item_id is not None:
                index.setdefault(task_key(str(item_id), data.get("kind"), data.get("look")), int(task["id"]))
            if not task.get("total_annotations") and not task.get("cancelled_annotations"):
                open_tasks.add(int(task["id"]))
                if data.get("kind") in BLIND_KINDS:
                    blind.add(int(task["id"]))
        return index, open_tasks, blind

    def send_for_review(self, project: Project, requests: Sequence[ReviewRequest]) -> list[ReviewTask]:
        """Put items in front of annotators with the model's guess pre-selected; one item, one task.

        New items are bulk-imported with their prediction; an item sent again keeps its task (and its labels) and
        gets the new prediction (see the module docstring for when older ones go). The project's model_version
        then follows the newest predictions, so "Uncertainty sampling" serves the lowest score first. ``score`` is
        the model's confidence (e.g. its top probability): lower means less certain. Returns one
        :class:`ReviewTask` per distinct item (the last request wins for repeated item ids), in request order.
        """
        latest: dict[str, ReviewRequest] = {}
        for request in requests:
            if request.label is not None and request.label not in project.classes:
                raise ProjectConfigError(
                    f"item {request.item_id!r}: predicted label {request.label!r} is not a class of project "
                    f"{project.title!r} {list(project.classes)}; call ensure_project with it first"
                )
            latest.pop(request_key(request), None)
            latest[request_key(request)] = request
        if not latest:
            return []
        client = self.client
        self.projects.ensure_storage(project.id)
        index, _, blind = self._task_index(project.id)
        new = [r for key, r in latest.items() if key not in index]
        guessed = [r for r in latest.values() if not (r.blind or r.second_look)]
        # The newest version among the guesses (a batch may mix versions): the one the project follows.
        newest = max(reversed(guessed), key=lambda r: version_rank(r.model_version)).model_version if guessed else None
        version = newest or self.projects.model_version(project.id)
        for start in range(0, len(new), IMPORT_CHUNK):
            chunk = new[start : start + IMPORT_CHUNK]
            payload = [task_body(self.projects.image_url(r.image), r, version) for r in chunk]
            with client.errors(f"importing {len(chunk)} review tasks into project {project.id}"):
                client.sdk.projects.import_tasks(id=project.id, request=payload, return_task_ids=True, request_options=client.bulk_opts)
        resent = [(index[key], r) for key, r in latest.items() if key in index and not (r.blind or r.second_look)]
        changed = False
        if resent:
            changed = self._rescore(project.id, resent, str(newest))
        elif newest is not None:
            changed = self.projects.follow_model_version(project.id, newest)
        if changed and blind:
            self._placeholders(project.id, sorted(blind), str(newest))  # blind tasks stay first in line
        if new:
            index, _, _ = self._task_index(project.id)
        missing = [item for item in latest if item not in index]
        if missing:
            raise LabelStudioUnavailable(f"Label Studio accepted the import but has no task for items {missing[:5]}")
        created = {request_key(r) for r in new}
        logger.info("sent %d items for review (%d new) to project %s", len(latest), len(new), project.id)
        return [ReviewTask(r.item_id, index[key], key in created) for key, r in latest.items()]

    def send_blind_elsewhere(self, project_id: int, image_key: str, requests: Sequence[ReviewRequest]) -> list[ReviewTask]:
        """Import items as blind tasks (no prediction) into a project juicer did not create (one connected through
        the ML backend), with the image under that project's own data key; one new task per item, in order.

        The task ids are the import's own answer, never found again by the ``item_id`` in task data: in a project
        juicer did not create, its members may have imported tasks naming any item (juicer links the tasks it
        created, and believes only those). Raises an :class:`~annotation.errors.AnnotationError` when juicer's
        token cannot create tasks there (a 403/404: it has no access to the project).
        """
        if not requests:
            return []
        self.projects.ensure_storage(project_id)
        tasks = [
            {"data": {image_key: self.projects.image_url(r.image), "item_id": r.item_id, "kind": "holdout"}}
            for r in requests
        ]
        response = self.client.request(
            "POST", f"/api/projects/{project_id}/import", f"importing {len(tasks)} holdout tasks into project {project_id}",
            params={"return_task_ids": "true"}, json=tasks, timeout=self.client.timeout_s * BULK_TIMEOUT_FACTOR,
        )  # fmt: skip
        task_ids = (response.json() or {}).get("task_ids") or []
        if len(task_ids) != len(requests):
            raise LabelStudioUnavailable(
                f"Label Studio imported {len(task_ids)} of {len(requests)} holdout tasks into project {project_id}"
            )
        logger.info("sent %d holdout items blind to project %s", len(requests), project_id)
        return [ReviewTask(r.item_id, int(task_id), True) for r, task_id in zip(requests, task_ids)]

    def _current_predictions(self, project_id: int) -> dict[int, list[dict[str, Any]]]:
        """task id -> the task's predictions (oldest first), in one listing of the project's predictions."""
        listed = self.client.request(
            "GET", "/api/predictions/", f"listing the predictions of project {project_id}",
            params={"project": project_id}, timeout=self.client.timeout_s * BULK_TIMEOUT_FACTOR,
        ).json()  # fmt: skip
        if isinstance(listed, Mapping):  # a paginated answer (not what 1.23.2 gives, but harmless to accept)
            listed = listed.get("results") or []
        by_task: dict[int, list[dict[str, Any]]] = {}
        for prediction in listed:
            by_task.setdefault(int(prediction["task"]), []).append(prediction)
        for predictions in by_task.values():
            predictions.sort(key=lambda p: int(p["id"]))
        return by_task

    def _rescore(self, project_id: int, tasks: Sequence[tuple[int, ReviewRequest]], model_version: str) -> bool:
        """Give existing tasks their new predictions in bulk (older ones stay until :meth:`prune`); whether the
        project's model version changed."""
        client = self.client
        current = self._current_predictions(project_id)
        create = [(task_id, r) for task_id, r in tasks if not (current.get(task_id) and _same_prediction(current[task_id][-1], r))]
        for start in range(0, len(create), PREDICTION_CHUNK):
            chunk = create[start : start + PREDICTION_CHUNK]
            with client.errors(f"importing the predictions of {len(chunk)} tasks into project {project_id}"):
                client.sdk.projects.import_predictions(
                    id=project_id, request=[{"task": task_id, **prediction_body(r)} for task_id, r in chunk],
                    request_options=client.bulk_opts,
                )  # fmt: skip
        return self.projects.follow_model_version(project_id, model_version)

    def _placeholders(self, project_id: int, task_ids: Sequence[int], model_version: str) -> None:
        """Give open blind tasks the placeholder prediction of a version the project has just moved to."""
        for start in range(0, len(task_ids), PREDICTION_CHUNK):
            chunk = task_ids[start : start + PREDICTION_CHUNK]
            with self.client.errors(f"importing the placeholders of {len(chunk)} blind tasks into project {project_id}"):
                self.client.sdk.projects.import_predictions(
                    id=project_id, request=[{"task": t, **placeholder_body(model_version)} for t in chunk],
                    request_options=self.client.bulk_opts,
                )  # fmt: skip

    def prune(self, project: Project) -> list[str]:
        """Delete the model versions no open editor can point at (see the module docstring); returns them."""
        client = self.client
        _, open_tasks, _ = self._task_index(project.id)
        current = self._current_predictions(project.id)
        keep = {str(p["model_version"]) for task_id in open_tasks for p in current.get(task_id, [])[-2:]}
        with client.errors(f"reading project {project.id}"):
            keep.add(str(client.sdk.projects.get(id=project.id, request_options=client.opts).model_version))
        stale = sorted({str(p["model_version"]) for predictions in current.values() for p in predictions} - keep)
        for version in stale:
            response = client.request(
                "DELETE", f"/api/projects/{project.id}/model-versions/", f"pruning model version {version!r} of project {project.id}",
                json={"model_version": version}, timeout=client.timeout_s * BULK_TIMEOUT_FACTOR * 5,
            )  # fmt: skip
            logger.info("pruned model version %s from project %s (%s)", version, project.id, response.json())
        return stale
