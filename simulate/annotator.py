"""A simulated annotator: what a person at Label Studio does, done through the API exactly as the editor does it.

For ``juicer simulate`` (:mod:`simulate.driver`) and the tests, never for production code (an import-linter
contract in ``pyproject.toml`` keeps it so). :class:`AnnotatorDesk` is the desk plus a person's moves: take the
queue's next task, list open ones, submit / update / delete an annotation with the editor's body (including the
``parent_prediction`` it names), and sign up a second person through the invite link (CSRF token scraped from
the signup page, as a browser does).
"""

from __future__ import annotations

import json
import logging
import secrets
import string
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Mapping

import httpx

from annotation.client import PAGE_SIZE
from annotation.desk import LabelStudioDesk
from annotation.errors import LabelStudioRejected, LabelStudioUnavailable
from annotation.labelconfig import JUICER_CONFIG
from annotation.models import Project
from annotation.webhooks import annotation_label

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class NextTask:
    """The task Label Studio's queue hands a person next, with the model's pre-annotation."""

    item_id: str
    task_id: int
    image: str  # as stored in the task (a /data/local-files/ URL or an http URL)
    predicted_label: str | None
    score: float | None
    model_version: str | None
    prediction_id: int | None


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


class AnnotatorDesk(LabelStudioDesk):
    """The desk with a person's moves in the editor (``juicer simulate``, tests); the same constructor."""

    def next_task(self, project: Project) -> NextTask | None:
        """The task the queue hands this token's user next (as the UI's "Label All Tasks"), or None when done."""
        try:
            response = self.client.request("GET", f"/api/projects/{project.id}/next", f"asking project {project.id} for the next task")
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

    def queue_version(self, project: Project) -> str | None:
        """The model version whose predictions the project's queue serves (Uncertainty sampling orders by it), None
        before the first. Read from the project: unlike :meth:`next_task` it locks no task to this user."""
        return self.projects.model_version(project.id)

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
        with self.client.errors(f"listing open tasks of project {project.id}"):
            for task in self.client.sdk.tasks.list(
                project=project.id, query=query, fields="all", page_size=PAGE_SIZE, request_options=self.client.opts
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
                "to_name": JUICER_CONFIG.image_name,
                "from_name": JUICER_CONFIG.choices_name,
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
        task = self.client.request("GET", f"/api/tasks/{task_id}", f"reading task {task_id}").json()
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
            response = self.client.request(
                "POST", f"/api/tasks/{task_id}/annotations", doing, params={"project": project_id}, json=body
            )
        except (LabelStudioRejected, LabelStudioUnavailable) as exc:
            # A re-send replaced the prediction the person started from: Label Studio answers 400 ("parent_prediction
            # ... does not exist") or, racing the delete, 500 (foreign key). The person's answer must not be lost.
            vanished = exc.status == 400 and "parent_prediction" in exc.message
            if parent is None or not (vanished or (exc.status or 0) >= 500):
                raise
            fresh = self.client.request("GET", f"/api/tasks/{task_id}", f"reading task {task_id} again").json()
            if not vanished and any(int(p.get("id", 0)) == parent for p in fresh.get("predictions") or []):
                raise  # the prediction is still there: the 500 was something else
            current = _newest_prediction_id(fresh)
            logger.warning(
                "task %s: prediction %s vanished before the annotation arrived; submitting it with prediction %s",
                task_id, parent, current,
            )  # fmt: skip
            body.update(parent_prediction=current if current != parent else None, unique_id=str(uuid.uuid4()))
            response = self.client.request(
                "POST", f"/api/tasks/{task_id}/annotations", doing, params={"project": project_id}, json=body
            )
        return int(response.json()["id"])

    def update_annotation(self, annotation_id: int, label: str, *, lead_time_s: float = 1.0) -> None:
        """Change a submitted annotation's label, as the editor's "Update" does."""
        current = self.client.request("GET", f"/api/annotations/{annotation_id}", f"reading annotation {annotation_id}").json()
        self.client.request(
            "PATCH", f"/api/annotations/{annotation_id}", f"updating annotation {annotation_id}",
            params={"taskID": current["task"], "project": current["project"]},
            json={"result": self._ui_result(label), "lead_time": lead_time_s, "project": str(current["project"])},
        )  # fmt: skip

    def delete_annotation(self, annotation_id: int) -> None:
        """Delete an annotation, as the editor's delete button does."""
        self.client.request("DELETE", f"/api/annotations/{annotation_id}", f"deleting annotation {annotation_id}")

    def invite_annotator(self, email: str, password: str) -> str:
        """Create a login for a second person through the organisation's invite link; return their API token.

        Label Studio's user API cannot set a password, so this does what a person does: open the invite link,
        sign up, and read their token from ``/api/current-user/token``.
        """
        invite = self.client.request("GET", "/api/invite", "reading the organisation's invite link").json()
        doing = f"signing up {email} through the invite link"
        with httpx.Client(base_url=self.client.url, timeout=self.client.timeout_s, follow_redirects=False) as person:
            with self.client.errors(doing):
                person.get("/user/signup/", params={"token": invite["token"]})
                csrf = person.cookies.get("csrftoken") or ""
                signup = person.post(
                    "/user/signup/", params={"token": invite["token"]},
                    data={"email": email, "password": password, "csrfmiddlewaretoken": csrf},
                    headers={"Referer": f"{self.client.url}/user/signup/"},
                )  # fmt: skip
                token = person.get("/api/current-user/token")
        if signup.status_code != 302 or token.status_code != 200:
            raise LabelStudioRejected(
                f"{doing}: Label Studio did not create the account (signup answered {signup.status_code}); "
                "the email may be taken or the password too short (8+ characters)",
                status=signup.status_code,
            )
        return str(token.json()["token"])
