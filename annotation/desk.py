"""The annotators' desk: juicer's only conversation with Label Studio.

One :class:`LabelStudioDesk` talks to one server with one API token (Label Studio's legacy token; see
:mod:`annotation.server`). Every method returns juicer's own records (:mod:`annotation.models`) and turns every
failure into an :class:`~annotation.errors.AnnotationError`; every request has a timeout and none is retried
here (the caller owns retry policy, guided by ``retryable``).
"""

from __future__ import annotations

import json
import logging
import secrets
import string
import uuid
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence
from urllib.parse import quote
from xml.sax.saxutils import quoteattr

import httpx
from label_studio_sdk import LabelStudio
from label_studio_sdk.core.api_error import ApiError

from annotation.errors import (
    AnnotationError,
    LabelStudioAuthError,
    LabelStudioRejected,
    LabelStudioUnavailable,
    ProjectConfigError,
)
from annotation.models import LabelEvent, NextTask, Project, PullCursor, ReviewRequest, ReviewTask, SeenAnnotation
from annotation.webhooks import (
    ANNOTATION_ACTIONS,
    CHOICES_NAME,
    IMAGE_NAME,
    SECRET_HEADER,
    annotation_label,
    annotator_of,
    is_completed,
    parse_time,
)
from config import Settings
from config.settings import check_class_names

logger = logging.getLogger(__name__)

SAMPLING = "Uncertainty sampling"  # Label Studio serves the lowest prediction score first
# The editor's "Label All Tasks" goes through the Data Manager tab, which ignores the project's sampling and
# walks the tab's own order: so the first tab of a juicer project is ordered by prediction score, lowest first.
QUEUE_VIEW_TITLE = "juicer: least certain first"
QUEUE_VIEW_DATA = {
    "title": QUEUE_VIEW_TITLE,
    "type": "list",
    "target": "tasks",
    "ordering": ["tasks:predictions_score"],
    "filters": {"conjunction": "and", "items": []},
}
IMPORT_CHUNK = 250  # tasks per bulk-import request: keeps each request well inside the timeout
PAGE_SIZE = 1000
BULK_TIMEOUT_FACTOR = 6  # bulk calls (import, prediction listing, whole-project export) get 6x the ordinary timeout
PREDICTION_WORKERS = 4  # concurrent PATCHes when re-sending items: the server's own work, not ours, is the limit


def label_config(classes: Sequence[str]) -> str:
    """The labelling config: one image and a single-choice list over ``classes`` (in order)."""
    choices = "".join(f"<Choice value={quoteattr(c)}/>" for c in classes)
    return (
        f'<View><Image name="{IMAGE_NAME}" value="$image"/>'
        f'<Choices name="{CHOICES_NAME}" toName="{IMAGE_NAME}" choice="single-radio" showInLine="true">'
        f"{choices}</Choices></View>"
    )


def _check_classes(classes: Sequence[str]) -> tuple[str, ...]:
    try:
        return tuple(check_class_names(classes))
    except ValueError as exc:
        raise ProjectConfigError(f"{exc}: {list(classes)}") from exc


def _detail(body: Any) -> str:
    """The useful part of a Label Studio error body (not the headers the SDK's str() dumps)."""
    if isinstance(body, Mapping):
        parts = [str(body.get("detail") or "")]
        if body.get("validation_errors"):
            parts.append(json.dumps(body["validation_errors"]))
        return " ".join(p for p in parts if p) or json.dumps(body)[:500]
    return str(body)[:500]


def _status_error(status: int | None, doing: str, detail: str, url: str) -> AnnotationError:
    if status in (401, 403):
        return LabelStudioAuthError(
            f"{doing}: Label Studio at {url} refused the API token ({status}: {detail}); check label_studio.token "
            "(a legacy token: the server must have been first started with --enable-legacy-api-token)",
            status=status,
        )
    if status is None or status >= 500 or status in (408, 429):
        return LabelStudioUnavailable(
            f"{doing}: Label Studio at {url} failed ({status}: {detail}); retry later, and read its log if it persists",
            status=status,
        )
    return LabelStudioRejected(f"{doing}: Label Studio at {url} rejected the request ({status}: {detail})", status=status)


def _ui_region_id() -> str:
    """A region id like the ones Label Studio's editor makes (10 letters and digits)."""
    alphabet = string.ascii_letters + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(10))


def _now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _newest_prediction_id(task: Mapping[str, Any]) -> int | None:
    """The id of a task's newest prediction (what the editor shows and an annotation names), None without one."""
    ids = [int(p["id"]) for p in task.get("predictions") or [] if p.get("id") is not None]
    return max(ids) if ids else None


class LabelStudioDesk:
    """Label Studio as juicer sees it: projects, review tasks with pre-annotations, labels coming back.

    ``files_root``: the folder whose images are served through Label Studio's local-files storage (the server
    must run with its parent as LOCAL_FILES_DOCUMENT_ROOT, as :class:`annotation.server.LabelStudioServer`
    does); needed only for :class:`ReviewRequest` images given as relative paths.
    """

    def __init__(
        self,
        url: str,
        token: str,
        *,
        files_root: Path | None = None,
        timeout_s: float = 10,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        """``transport`` replaces the network (tests pass an ``httpx.MockTransport``)."""
        self.url = url.rstrip("/")
        self.files_root = Path(files_root).resolve() if files_root is not None else None
        self.timeout_s = timeout_s
        self._token = token
        self._http = httpx.Client(
            base_url=self.url, timeout=httpx.Timeout(timeout_s), follow_redirects=False, transport=transport
        )
        self._ls = LabelStudio(base_url=self.url, api_key=token, httpx_client=self._http, timeout=timeout_s)
        # No SDK retries with sleeps: fail fast, the caller decides (AnnotationError.retryable).
        self._opts: dict[str, Any] = {"max_retries": 0, "timeout_in_seconds": timeout_s}
        self._bulk_opts: dict[str, Any] = {"max_retries": 0, "timeout_in_seconds": timeout_s * BULK_TIMEOUT_FACTOR}
        self._storages: set[int] = set()  # projects whose local-files storage is known to exist
        self._views: set[int] = set()  # projects whose least-certain-first tab is known to exist

    # -- plumbing ---------------------------------------------------------------------------------------------

    def close(self) -> None:
        """Close the HTTP connections."""
        self._http.close()

    def __enter__(self) -> "LabelStudioDesk":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def _errors(self, doing: str) -> Iterator[None]:
        try:
            yield
        except AnnotationError:
            raise
        except ApiError as exc:
            raise _status_error(exc.status_code, doing, _detail(exc.body), self.url) from exc
        except httpx.TimeoutException as exc:
            raise LabelStudioUnavailable(
                f"{doing}: Label Studio at {self.url} did not answer within {self.timeout_s:g} s; check it runs "
                "(`juicer labelstudio status`) and retry"
            ) from exc
        except httpx.TransportError as exc:
            raise LabelStudioUnavailable(
                f"{doing}: cannot reach Label Studio at {self.url} ({type(exc).__name__}: {exc}); start it with "
                "`juicer labelstudio start` and retry"
            ) from exc

    def _request(self, method: str, path: str, doing: str, **kwargs: Any) -> httpx.Response:
        """A raw call with the token (for endpoints the SDK lacks or shapes differently than the UI)."""
        headers = {"Authorization": f"Token {self._token}", **kwargs.pop("headers", {})}
        with self._errors(doing):
            response = self._http.request(method, path, headers=headers, **kwargs)
        if response.status_code >= 400:
            try:
                body: Any = response.json()
            except ValueError:
                body = response.text
            raise _status_error(response.status_code, doing, _detail(body), self.url)
        return response

    # -- health and projects ----------------------------------------------------------------------------------

    def health(self) -> bool:
        """True when the server answers ``/health`` with UP within the timeout; never raises."""
        return answers_up(self._http)

    def project_url(self, project_id: int) -> str:
        """Where a person opens the project's task list."""
        return f"{self.url}/projects/{project_id}/data"

    def ensure_project(self, classes: Sequence[str], title: str) -> Project:
        """Create or reuse the project titled ``title`` with an image Choices config over ``classes``.

        Idempotent. Classes missing from the project are appended; a class the project has but ``classes``
        lacks is removed only if no completed annotation uses it, else :class:`ProjectConfigError`.
        """
        wanted = _check_classes(classes)
        with self._errors(f"looking up project {title!r}"):
            found = [p for p in self._ls.projects.list(title=title, request_options=self._opts) if p.title == title]
        if not found:
            with self._errors(f"creating project {title!r}"):
                created = self._ls.projects.create(
                    title=title, label_config=label_config(wanted), sampling=SAMPLING, request_options=self._opts
                )
            logger.info("created Label Studio project %s %r with %d classes", created.id, title, len(wanted))
            project = Project(int(created.id), title, wanted, self.project_url(int(created.id)))
            self._ensure_queue_view(project.id)
            self._ensure_storage(project.id)
            return project
        if len(found) > 1:
            logger.warning("%d projects titled %r: using the oldest (id %s)", len(found), title, min(p.id for p in found))
        existing = min(found, key=lambda p: p.id)
        current = self._project_classes(existing.parsed_label_config, title)
        removed = [c for c in current if c not in wanted]
        if removed:
            used = self._label_counts(int(existing.id))
            in_use = {c: used[c] for c in removed if used.get(c)}
            if in_use:
                raise ProjectConfigError(
                    f"project {title!r} (id {existing.id}) has labels for {in_use}: refusing to remove those classes. "
                    "Keep them in the class list, or delete those annotations in Label Studio first."
                )
        merged = tuple(c for c in current if c in wanted) + tuple(c for c in wanted if c not in current)
        changes: dict[str, Any] = {}
        if merged != current:
            changes["label_config"] = label_config(merged)
        if existing.sampling != SAMPLING:
            changes["sampling"] = SAMPLING
        if changes:
            with self._errors(f"updating project {title!r}"):
                try:
                    self._ls.projects.update(id=existing.id, request_options=self._opts, **changes)
                except ApiError as exc:
                    if exc.status_code == 400 and "label_config" in changes:
                        raise ProjectConfigError(
                            f"Label Studio refused the new class list for project {title!r}: {_detail(exc.body)}"
                        ) from exc
                    raise
            logger.info("updated project %s: classes %s -> %s", existing.id, list(current), list(merged))
        self._ensure_queue_view(int(existing.id))
        self._ensure_storage(int(existing.id))
        return Project(int(existing.id), title, merged, self.project_url(int(existing.id)))

    @staticmethod
    def _project_classes(parsed: Any, title: str) -> tuple[str, ...]:
        control = parsed.get(CHOICES_NAME) if isinstance(parsed, Mapping) else None
        if not isinstance(control, Mapping) or control.get("type") != "Choices":
            raise ProjectConfigError(
                f"project {title!r} exists but is not a juicer project (no Choices named {CHOICES_NAME!r}); "
                "choose another label_studio.project_title"
            )
        return tuple(str(c) for c in control.get("labels") or ())

    def _ensure_storage(self, project_id: int) -> None:
        """Give the project a local-files storage on ``files_root`` so Label Studio serves its images."""
        if self.files_root is None or project_id in self._storages:
            return
        path = str(self.files_root)
        with self._errors(f"listing file storages of project {project_id}"):
            storages = self._ls.import_storage.local.list(project=project_id, request_options=self._opts)
        if not any(getattr(s, "path", None) == path for s in storages):
            self.files_root.mkdir(parents=True, exist_ok=True)
            with self._errors(f"connecting {path} to project {project_id} as local-files storage"):
                self._ls.import_storage.local.create(
                    project=project_id, path=path, use_blob_urls=True, title="juicer images", request_options=self._opts
                )
        self._storages.add(project_id)

    def _ensure_queue_view(self, project_id: int) -> None:
        """Give the project its least-certain-first Data Manager tab (what the editor's queue follows)."""
        if project_id in self._views:
            return
        with self._errors(f"listing the task tabs of project {project_id}"):
            views = self._ls.views.list(project=project_id, request_options=self._opts)
            if not any(v.project == project_id and (v.data or {}).get("title") == QUEUE_VIEW_TITLE for v in views):
                self._ls.views.create(project=project_id, data=dict(QUEUE_VIEW_DATA), request_options=self._opts)
        self._views.add(project_id)

    def _label_counts(self, project_id: int) -> dict[str, int]:
        counts: dict[str, int] = {}
        for seen in self._scan_annotations(project_id).values():
            counts[seen.label] = counts.get(seen.label, 0) + 1
        return counts

    # -- review tasks -----------------------------------------------------------------------------------------

    def image_url(self, image: str) -> str:
        """The task's image value: an http(s) URL as given, a path under ``files_root`` as a local-files URL."""
        if image.startswith(("http://", "https://")):
            return image
        if self.files_root is None:
            raise ValueError(f"image {image!r} is a path, but this desk has no files_root to serve it from")
        relative = Path(image)
        if relative.is_absolute() or ".." in relative.parts:
            raise ValueError(f"image {image!r} must be a path relative to {self.files_root}, without '..'")
        return "/data/local-files/?d=" + quote(f"{self.files_root.name}/{relative.as_posix()}")

    @staticmethod
    def _prediction(request: ReviewRequest) -> dict[str, Any]:
        result = []
        if request.label is not None:
            result = [
                {"from_name": CHOICES_NAME, "to_name": IMAGE_NAME, "type": "choices", "value": {"choices": [request.label]}}
            ]
        return {"model_version": request.model_version, "score": float(request.score), "result": result}

    def _list_tasks(self, project_id: int, include: str) -> Iterator[dict[str, Any]]:
        """The project's tasks as plain dicts with only the ``include``d fields, a page at a time.

        Raw rather than the SDK's ``tasks.list``: asking for two fields instead of all of them and skipping the
        SDK's models makes a 1,000-task listing several times faster.
        """
        page, listed = 1, 0
        while True:
            params: dict[str, Any] = {"project": project_id, "fields": "all", "include": include, "page": page, "page_size": PAGE_SIZE}
            body = self._request("GET", "/api/tasks/", f"listing tasks of project {project_id}", params=params).json()
            tasks = body.get("tasks") or []
            yield from tasks
            listed += len(tasks)
            if len(tasks) < PAGE_SIZE or listed >= int(body.get("total", listed)):
                return
            page += 1

    def _task_index(self, project_id: int) -> dict[str, int]:
        """item id -> task id for every task juicer created in the project."""
        index: dict[str, int] = {}
        for task in self._list_tasks(project_id, "id,data"):
            item_id = (task.get("data") or {}).get("item_id")
            if item_id is not None:
                index.setdefault(str(item_id), int(task["id"]))
        return index

    def send_for_review(self, project: Project, requests: Sequence[ReviewRequest]) -> list[ReviewTask]:
        """Put items in front of annotators with the model's guess pre-selected; one item, one task.

        New items are bulk-imported with their prediction; an item sent again keeps its task (and its labels)
        and has its prediction updated in place (an annotator who opened it keeps a valid parent prediction). The
        project's model_version then follows the newest predictions, so "Uncertainty sampling" serves the lowest
        score first. ``score`` is the model's confidence
        (e.g. its top probability): lower means less certain. Returns one :class:`ReviewTask` per distinct item
        (the last request wins for repeated item ids), in request order.
        """
        latest: dict[str, ReviewRequest] = {}
        for request in requests:
            if request.label is not None and request.label not in project.classes:
                raise ProjectConfigError(
                    f"item {request.item_id!r}: predicted label {request.label!r} is not a class of project "
                    f"{project.title!r} {list(project.classes)}; call ensure_project with it first"
                )
            latest.pop(request.item_id, None)
            latest[request.item_id] = request
        if not latest:
            return []
        self._ensure_storage(project.id)
        index = self._task_index(project.id)
        new = [r for r in latest.values() if r.item_id not in index]
        for start in range(0, len(new), IMPORT_CHUNK):
            chunk = new[start : start + IMPORT_CHUNK]
            payload = [
                {"data": {"image": self.image_url(r.image), "item_id": r.item_id}, "predictions": [self._prediction(r)]}
                for r in chunk
            ]
            with self._errors(f"importing {len(chunk)} review tasks into project {project.id}"):
                self._ls.projects.import_tasks(
                    id=project.id, request=payload, return_task_ids=True, request_options=self._bulk_opts
                )
        resent = [r for r in latest.values() if r.item_id in index]
        self._update_predictions(project.id, [(index[r.item_id], r) for r in resent])
        if new:
            index = self._task_index(project.id)
        self._follow_model_version(project.id, list(latest.values())[-1].model_version)
        missing = [item for item in latest if item not in index]
        if missing:
            raise LabelStudioUnavailable(f"Label Studio accepted the import but has no task for items {missing[:5]}")
        created_ids = {r.item_id for r in new}
        logger.info("sent %d items for review (%d new) to project %s", len(latest), len(new), project.id)
        return [ReviewTask(item, index[item], item in created_ids) for item in latest]

    def _current_predictions(self, project_id: int) -> dict[int, list[dict[str, Any]]]:
        """task id -> the task's predictions (oldest first), in one listing of the project's predictions."""
        listed = self._request(
            "GET", "/api/predictions/", f"listing the predictions of project {project_id}",
            params={"project": project_id}, timeout=self.timeout_s * BULK_TIMEOUT_FACTOR,
        ).json()  # fmt: skip
        if isinstance(listed, Mapping):  # a paginated answer (not what 1.23.2 gives, but harmless to accept)
            listed = listed.get("results") or []
        by_task: dict[int, list[dict[str, Any]]] = {}
        for prediction in listed:
            by_task.setdefault(int(prediction["task"]), []).append(prediction)
        for predictions in by_task.values():
            predictions.sort(key=lambda p: int(p["id"]))
        return by_task

    @classmethod
    def _same_prediction(cls, current: Mapping[str, Any], request: ReviewRequest) -> bool:
        """Whether the stored prediction already says what ``request`` would write."""
        wanted = cls._prediction(request)
        score = current.get("score")
        return (
            current.get("model_version") == wanted["model_version"]
            and score is not None
            and abs(float(score) - wanted["score"]) < 1e-9
            and annotation_label(current.get("result")) == request.label
        )

    def _update_predictions(self, project_id: int, tasks: Sequence[tuple[int, ReviewRequest]]) -> None:
        """Give existing tasks the new predictions, keeping each task's prediction (its id) in place.

        An annotation names the prediction it started from (``parent_prediction``): deleting a task's
        prediction while a person has the task open makes their submit fail. So the newest prediction of each
        task is updated in place (PATCH, a few at a time; Label Studio 1.23.2 has no bulk update, so this costs
        one request per item) unless it already says the same; only a task without any gets one created (bulk),
        and older duplicates are deleted, since the Data Manager's score column averages every prediction of a
        task.
        """
        if not tasks:
            return
        current = self._current_predictions(project_id)
        create: list[tuple[int, ReviewRequest]] = []
        update: list[tuple[int, int, ReviewRequest]] = []
        surplus: list[int] = []
        for task_id, request in tasks:
            predictions = current.get(task_id) or []
            if not predictions:
                create.append((task_id, request))
                continue
            *older, newest = predictions
            if not self._same_prediction(newest, request):  # e.g. a retried send: nothing to change
                update.append((int(newest["id"]), task_id, request))
            surplus.extend(int(p["id"]) for p in older)
        for start in range(0, len(create), IMPORT_CHUNK):
            chunk = create[start : start + IMPORT_CHUNK]
            with self._errors(f"creating the predictions of {len(chunk)} tasks in project {project_id}"):
                self._ls.projects.import_predictions(
                    id=project_id, request=[{"task": task_id, **self._prediction(r)} for task_id, r in chunk],
                    request_options=self._bulk_opts,
                )  # fmt: skip

        def patch(job: tuple[int, int, ReviewRequest]) -> None:
            prediction_id, task_id, request = job
            # "task" too: Label Studio validates a new result against the task's project config
            self._request(
                "PATCH", f"/api/predictions/{prediction_id}", f"updating prediction {prediction_id} of task {task_id}",
                json={"task": task_id, **self._prediction(request)},
            )  # fmt: skip

        def delete(prediction_id: int) -> None:
            try:
                self._request("DELETE", f"/api/predictions/{prediction_id}", f"deleting old prediction {prediction_id}")
            except LabelStudioRejected as exc:
                if exc.status != 404:  # already gone: what we wanted
                    raise

        with ThreadPoolExecutor(max_workers=PREDICTION_WORKERS, thread_name_prefix="juicer-predictions") as pool:
            list(pool.map(patch, update))  # list(): re-raise the first failure
            list(pool.map(delete, surplus))
        if surplus:
            logger.info("deleted %d duplicate predictions in project %s", len(surplus), project_id)

    def _follow_model_version(self, project_id: int, model_version: str) -> None:
        # Uncertainty sampling only orders by predictions of the project's model_version (else random).
        with self._errors(f"reading project {project_id}"):
            current = self._ls.projects.get(id=project_id, request_options=self._opts)
        if current.model_version != model_version or current.sampling != SAMPLING:
            with self._errors(f"setting project {project_id}'s model version to {model_version!r}"):
                self._ls.projects.update(
                    id=project_id, model_version=model_version, sampling=SAMPLING, request_options=self._opts
                )

    # -- labels coming back -----------------------------------------------------------------------------------

    def _scan_annotations(self, project_id: int) -> dict[int, SeenAnnotation]:
        """Every completed (not skipped, not empty) annotation on juicer's tasks, by annotation id."""
        current: dict[int, SeenAnnotation] = {}
        # The JSON export of annotated tasks: full annotations of every annotator, and on a 1,000-label project
        # about twice as fast as /api/tasks with all fields (which is the only task listing that has them).
        response = self._request(
            "GET", f"/api/projects/{project_id}/export", f"exporting the labels of project {project_id}",
            params={"exportType": "JSON", "download_all_tasks": "false"}, timeout=self.timeout_s * BULK_TIMEOUT_FACTOR,
        )  # fmt: skip
        for task in response.json():
            item_id = (task.get("data") or {}).get("item_id")
            if item_id is None:
                continue
            for annotation in task.get("annotations") or []:
                if not is_completed(annotation):
                    continue
                current[int(annotation["id"])] = SeenAnnotation(
                    item_id=str(item_id),
                    task_id=int(task["id"]),
                    label=str(annotation_label(annotation.get("result"))),
                    annotator=annotator_of(annotation),
                    updated_at=str(annotation.get("updated_at") or annotation.get("created_at")),
                )
        return current

    def pull_labels(self, project: Project, cursor: PullCursor | None = None) -> tuple[list[LabelEvent], PullCursor]:
        """Label events since ``cursor`` (None: from the start) and the cursor to pass next time.

        Reports each new or changed completed annotation as "set" (an update carries the same annotation id),
        and each one reported before but now deleted, emptied or skipped as "withdrawn". Several annotators on
        one item are all reported.
        """
        if cursor is not None and cursor.project_id != project.id:
            raise ValueError(f"cursor belongs to project {cursor.project_id}, not {project.id}")
        seen = dict(cursor.seen) if cursor is not None else {}
        current = self._scan_annotations(project.id)
        events: list[LabelEvent] = []
        for annotation_id, now in current.items():
            before = seen.get(annotation_id)
            if before is None or before.updated_at != now.updated_at or before.label != now.label:
                events.append(
                    LabelEvent(now.item_id, now.task_id, annotation_id, now.label, now.annotator, parse_time(now.updated_at), "set")
                )
        withdrawn_at = datetime.now(timezone.utc)
        for annotation_id, before in seen.items():
            if annotation_id not in current:
                events.append(
                    LabelEvent(before.item_id, before.task_id, annotation_id, None, before.annotator, withdrawn_at, "withdrawn")
                )
        events.sort(key=lambda e: (e.at, e.annotation_id))
        return events, PullCursor(project.id, current)

    def annotator_emails(self) -> dict[str, str]:
        """Label Studio user id (as in :attr:`LabelEvent.annotator`) -> the user's email."""
        with self._errors("listing users"):
            return {str(u.id): str(u.email) for u in self._ls.users.list(request_options=self._opts)}

    def register_webhook(self, project: Project, url: str, secret: str) -> int:
        """Have Label Studio POST annotation events for ``project`` to ``url`` with ``secret`` in a header.

        Idempotent: an existing webhook of the project with the same URL is updated. Returns its id.
        """
        fields: dict[str, Any] = {
            "url": url,
            "project": project.id,
            "send_payload": True,
            "send_for_all_actions": False,
            "actions": list(ANNOTATION_ACTIONS),
            "headers": {SECRET_HEADER: secret},
            "is_active": True,
        }
        with self._errors(f"registering webhook {url} for project {project.id}"):
            hooks = [h for h in self._ls.webhooks.list(project=str(project.id), request_options=self._opts) if h.url == url]
            if hooks:
                update = {k: v for k, v in fields.items() if k != "project"}
                hook = self._ls.webhooks.update(id=hooks[0].id, request_options=self._opts, **update)
            else:
                hook = self._ls.webhooks.create(request_options=self._opts, **fields)
        logger.info("webhook %s -> %s registered for project %s", hook.id, url, project.id)
        return int(hook.id)

    # -- what an annotator does (juicer simulate, tests) ------------------------------------------------------

    def next_task(self, project: Project) -> NextTask | None:
        """The task the queue hands this token's user next (as the UI's "Label All Tasks"), or None when done."""
        try:
            response = self._request("GET", f"/api/projects/{project.id}/next", f"asking project {project.id} for the next task")
        except LabelStudioRejected as exc:
            if exc.status == 404:  # Label Studio answers 404 when the queue is empty
                return None
            raise
        task = response.json()
        predictions = sorted(task.get("predictions") or [], key=lambda p: p.get("id", 0))
        prediction = predictions[-1] if predictions else {}
        data = task.get("data") or {}
        return NextTask(
            item_id=str(data.get("item_id")),
            task_id=int(task["id"]),
            image=str(data.get("image")),
            predicted_label=annotation_label(prediction.get("result")),
            score=prediction.get("score"),
            model_version=prediction.get("model_version"),
            prediction_id=prediction.get("id"),
        )

    def open_tasks(self, project: Project) -> list[NextTask]:
        """Every task of ``project`` nobody has annotated or skipped yet, with its latest prediction (any order).

        What a person sees scanning the task list (``juicer simulate --order random`` picks from it).
        """
        query = json.dumps(
            {
                "filters": {
                    "conjunction": "and",
                    "items": [
                        {"filter": "filter:tasks:total_annotations", "operator": "equal", "type": "Number", "value": 0},
                        {"filter": "filter:tasks:cancelled_annotations", "operator": "equal", "type": "Number", "value": 0},
                    ],
                }
            }
        )
        found: list[NextTask] = []
        with self._errors(f"listing open tasks of project {project.id}"):
            for task in self._ls.tasks.list(
                project=project.id, query=query, fields="all", page_size=PAGE_SIZE, request_options=self._opts
            ):
                data = task.data or {}
                predictions = sorted(task.predictions or [], key=lambda p: p.id or 0)
                prediction = predictions[-1] if predictions else None
                found.append(
                    NextTask(
                        item_id=str(data.get("item_id")),
                        task_id=int(task.id),
                        image=str(data.get("image")),
                        predicted_label=annotation_label(prediction.result) if prediction else None,
                        score=prediction.score if prediction else None,
                        model_version=prediction.model_version if prediction else None,
                        prediction_id=prediction.id if prediction else None,
                    )
                )
        return found

    def _ui_result(self, label: str) -> list[dict[str, Any]]:
        return [
            {
                "id": _ui_region_id(),
                "type": "choices",
                "value": {"choices": [label]},
                "origin": "manual",
                "to_name": IMAGE_NAME,
                "from_name": CHOICES_NAME,
            }
        ]

    def submit_annotation(
        self,
        task_id: int,
        label: str | None,
        *,
        lead_time_s: float = 1.0,
        started_at: str | None = None,
        prediction_id: int | None = None,
    ) -> int:
        """Submit ``label`` for a task exactly as Label Studio's editor does; ``None`` skips the task. Returns the annotation id.

        Reads the task first (the editor has it loaded) for its project and prediction, then POSTs
        ``/api/tasks/{id}/annotations?project=...`` with the editor's body. ``prediction_id``: the prediction the
        person started from (:attr:`NextTask.prediction_id`, taken earlier); None: the task's newest now. If that
        prediction no longer exists, the annotation is submitted once more naming the task's current one.
        """
        task = self._request("GET", f"/api/tasks/{task_id}", f"reading task {task_id}").json()
        parent = prediction_id if prediction_id is not None else _newest_prediction_id(task)
        return self._post_annotation(task, label, lead_time_s, started_at, parent)

    def _post_annotation(
        self, task: Mapping[str, Any], label: str | None, lead_time_s: float, started_at: str | None, parent: int | None
    ) -> int:
        """POST the editor's body naming ``parent``; if that prediction is gone, once more naming the current one."""
        task_id, project_id = int(task["id"]), int(task["project"])
        body: dict[str, Any] = {
            "lead_time": lead_time_s,
            "result": self._ui_result(label) if label is not None else [],
            "draft_id": 0,
            "parent_prediction": parent,
            "parent_annotation": None,
            "started_at": started_at or _now_iso(),
            "project": str(project_id),
            "unique_id": str(uuid.uuid4()),
        }
        if label is None:
            body["was_cancelled"] = True
        doing = f"submitting an annotation for task {task_id}"
        try:
            response = self._request(
                "POST", f"/api/tasks/{task_id}/annotations", doing, params={"project": project_id}, json=body
            )
        except (LabelStudioRejected, LabelStudioUnavailable) as exc:
            # A re-send replaced the prediction the person started from: Label Studio answers 400 ("parent_prediction
            # ... does not exist") or, racing the delete, 500 (foreign key). The person's answer must not be lost.
            vanished = exc.status == 400 and "parent_prediction" in exc.message
            if parent is None or not (vanished or (exc.status or 0) >= 500):
                raise
            fresh = self._request("GET", f"/api/tasks/{task_id}", f"reading task {task_id} again").json()
            if not vanished and any(int(p.get("id", 0)) == parent for p in fresh.get("predictions") or []):
                raise  # the prediction is still there: the 500 was something else
            current = _newest_prediction_id(fresh)
            logger.warning(
                "task %s: prediction %s vanished before the annotation arrived; submitting it with prediction %s",
                task_id, parent, current,
            )  # fmt: skip
            body.update(parent_prediction=current if current != parent else None, unique_id=str(uuid.uuid4()))
            response = self._request(
                "POST", f"/api/tasks/{task_id}/annotations", doing, params={"project": project_id}, json=body
            )
        return int(response.json()["id"])

    def update_annotation(self, annotation_id: int, label: str, *, lead_time_s: float = 1.0) -> None:
        """Change a submitted annotation's label, as the editor's "Update" does."""
        current = self._request("GET", f"/api/annotations/{annotation_id}", f"reading annotation {annotation_id}").json()
        self._request(
            "PATCH", f"/api/annotations/{annotation_id}", f"updating annotation {annotation_id}",
            params={"taskID": current["task"], "project": current["project"]},
            json={"result": self._ui_result(label), "lead_time": lead_time_s, "project": str(current["project"])},
        )  # fmt: skip

    def delete_annotation(self, annotation_id: int) -> None:
        """Delete an annotation, as the editor's delete button does."""
        self._request("DELETE", f"/api/annotations/{annotation_id}", f"deleting annotation {annotation_id}")

    def invite_annotator(self, email: str, password: str) -> str:
        """Create a login for a second person through the organisation's invite link; return their API token.

        Label Studio's user API cannot set a password, so this does what a person does: open the invite link,
        sign up, and read their token from ``/api/current-user/token``.
        """
        invite = self._request("GET", "/api/invite", "reading the organisation's invite link").json()
        doing = f"signing up {email} through the invite link"
        with httpx.Client(base_url=self.url, timeout=self.timeout_s, follow_redirects=False) as person:
            with self._errors(doing):
                person.get("/user/signup/", params={"token": invite["token"]})
                csrf = person.cookies.get("csrftoken") or ""
                signup = person.post(
                    "/user/signup/", params={"token": invite["token"]},
                    data={"email": email, "password": password, "csrfmiddlewaretoken": csrf},
                    headers={"Referer": f"{self.url}/user/signup/"},
                )  # fmt: skip
                token = person.get("/api/current-user/token")
        if signup.status_code != 302 or token.status_code != 200:
            raise LabelStudioRejected(
                f"{doing}: Label Studio did not create the account (signup answered {signup.status_code}); "
                "the email may be taken or the password too short (8+ characters)",
                status=signup.status_code,
            )
        return str(token.json()["token"])


def answers_up(http: httpx.Client) -> bool:
    """True when Label Studio behind ``http`` answers ``GET /health`` with ``{"status": "UP"}``; never raises."""
    try:
        response = http.get("/health")
        return response.status_code == 200 and response.json().get("status") == "UP"
    except (httpx.HTTPError, ValueError):
        return False


def desk_from_settings(settings: Settings, url: str | None = None) -> LabelStudioDesk:
    """The desk for ``settings.label_studio``: at ``url`` if given, else its ``url`` setting, else the server juicer
    runs, at the port it really took (Label Studio silently moves off a busy port)."""
    from annotation.server import server_from_settings  # the server module is only needed for its URL here

    ls = settings.label_studio
    url = url or ls.url or server_from_settings(settings).url
    return LabelStudioDesk(url, ls.token, files_root=settings.images_dir, timeout_s=ls.timeout_s)
