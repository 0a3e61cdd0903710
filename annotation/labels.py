"""Labels coming back from Label Studio: pulling completed annotations, webhooks, annotators' names.

:meth:`Labels.pull_labels` is the safety net for missed webhooks: one JSON export of the annotated tasks, compared
with the cursor of what was reported before (new or changed -> "set", gone -> "withdrawn").
"""

from __future__ import annotations

import logging
from datetime import datetime, timezone
from typing import Any

from annotation.client import BULK_TIMEOUT_FACTOR, LabelStudioClient
from annotation.errors import LabelStudioRejected
from annotation.models import Annotation, LabelEvent, Project, PullCursor, SeenAnnotation, Task
from annotation.webhooks import (
    ANNOTATION_ACTIONS, SECRET_HEADER, annotation_label, annotation_record, annotator_of, is_completed, parse_time,
    task_record,
)  # fmt: skip

logger = logging.getLogger(__name__)


class Labels:
    """Annotations of juicer's projects on one server, as :class:`~annotation.models.LabelEvent` records."""

    def __init__(self, client: LabelStudioClient) -> None:
        self.client = client

    def label_counts(self, project_id: int) -> dict[str, int]:
        """Completed annotations per class in the project."""
        counts: dict[str, int] = {}
        for seen in self.scan_annotations(project_id).values():
            counts[seen.label] = counts.get(seen.label, 0) + 1
        return counts

    def scan_annotations(self, project_id: int) -> dict[int, SeenAnnotation]:
        """Every completed (not skipped, not empty) annotation on juicer's tasks, by annotation id."""
        current: dict[int, SeenAnnotation] = {}
        # The JSON export of annotated tasks: full annotations of every annotator, and on a 1,000-label project
        # about twice as fast as /api/tasks with all fields (which is the only task listing that has them).
        response = self.client.request(
            "GET", f"/api/projects/{project_id}/export", f"exporting the labels of project {project_id}",
            params={"exportType": "JSON", "download_all_tasks": "false"}, timeout=self.client.timeout_s * BULK_TIMEOUT_FACTOR,
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
        current = self.scan_annotations(project.id)
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
        with self.client.errors("listing users"):
            return {str(u.id): str(u.email) for u in self.client.sdk.users.list(request_options=self.client.opts)}

    def get_annotation(self, annotation_id: int) -> Annotation | None:
        """One annotation as Label Studio holds it now, or None when it does not exist."""
        try:
            raw = self.client.request("GET", f"/api/annotations/{annotation_id}", f"reading annotation {annotation_id}").json()
        except LabelStudioRejected as exc:
            if exc.status == 404:
                return None
            raise
        return annotation_record(raw)

    def get_task(self, task_id: int) -> Task | None:
        """One task as Label Studio holds it now (its project and the item its data names), or None when it does not exist."""
        try:
            raw = self.client.request("GET", f"/api/tasks/{task_id}", f"reading task {task_id}").json()
        except LabelStudioRejected as exc:
            if exc.status == 404:
                return None
            raise
        return task_record(raw)

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
        with self.client.errors(f"registering webhook {url} for project {project.id}"):
            hooks = [h for h in self.client.sdk.webhooks.list(project=str(project.id), request_options=self.client.opts) if h.url == url]
            if hooks:
                update = {k: v for k, v in fields.items() if k != "project"}
                hook = self.client.sdk.webhooks.update(id=hooks[0].id, request_options=self.client.opts, **update)
            else:
                hook = self.client.sdk.webhooks.create(request_options=self.client.opts, **fields)
        logger.info("webhook %s -> %s registered for project %s", hook.id, url, project.id)
        return int(hook.id)
