"""Projects and their labelling config: create or reuse juicer's project, keep its classes, tab and file storage.

The config itself is written by :func:`annotation.labelconfig.label_config`; this module talks to Label Studio
about it: appending classes, refusing to drop one that has labels, the least-certain-first Data Manager tab
the editor's queue follows, and the local-files storage that serves juicer's images.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence
from urllib.parse import quote

from label_studio_sdk.core.api_error import ApiError

from annotation.client import LabelStudioClient, error_detail
from annotation.errors import ProjectConfigError
from annotation.labelconfig import CHOICES_NAME, label_config
from annotation.models import Project, version_rank
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


def check_classes(classes: Sequence[str]) -> tuple[str, ...]:
    """``classes`` by the one class-name rule (:func:`config.settings.check_class_names`), else ProjectConfigError."""
    try:
        return tuple(check_class_names(classes))
    except ValueError as exc:
        raise ProjectConfigError(f"{exc}: {list(classes)}") from exc


class Projects:
    """juicer's projects on one server. ``label_counts(project_id)`` counts completed labels per class.

    ``files_root``: the folder whose images are served through Label Studio's local-files storage (the server
    must run with its parent as LOCAL_FILES_DOCUMENT_ROOT, as :class:`annotation.launcher.LabelStudioLauncher`
    does); needed only for images given as relative paths.
    """

    def __init__(self, client: LabelStudioClient, files_root: Path | None, label_counts: Callable[[int], dict[str, int]]) -> None:
        self.client = client
        self.files_root = Path(files_root).resolve() if files_root is not None else None
        self._label_counts = label_counts
        self._storages: set[int] = set()  # projects whose local-files storage is known to exist
        self._views: set[int] = set()  # projects whose least-certain-first tab is known to exist

    def project_url(self, project_id: int) -> str:
        """Where a person opens the project's task list."""
        return f"{self.client.url}/projects/{project_id}/data"

    def ensure_project(self, classes: Sequence[str], title: str) -> Project:
        """Create or reuse the project titled ``title`` with an image Choices config over ``classes``.

        Idempotent. Classes missing from the project are appended; a class the project has but ``classes``
        lacks is removed only if no completed annotation uses it, else :class:`ProjectConfigError`.
        """
        client = self.client
        wanted = check_classes(classes)
        with client.errors(f"looking up project {title!r}"):
            found = [p for p in client.sdk.projects.list(title=title, request_options=client.opts) if p.title == title]
        if not found:
            with client.errors(f"creating project {title!r}"):
                created = client.sdk.projects.create(
                    title=title, label_config=label_config(wanted), sampling=SAMPLING, request_options=client.opts
                )
            logger.info("created Label Studio project %s %r with %d classes", created.id, title, len(wanted))
            project = Project(int(created.id), title, wanted, self.project_url(int(created.id)))
            self.ensure_queue_view(project.id)
            self.ensure_storage(project.id)
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
            with client.errors(f"updating project {title!r}"):
                try:
                    client.sdk.projects.update(id=existing.id, request_options=client.opts, **changes)
                except ApiError as exc:
                    if exc.status_code == 400 and "label_config" in changes:
                        raise ProjectConfigError(
                            f"Label Studio refused the new class list for project {title!r}: {error_detail(exc.body)}"
                        ) from exc
                    raise
            logger.info("updated project %s: classes %s -> %s", existing.id, list(current), list(merged))
        self.ensure_queue_view(int(existing.id))
        self.ensure_storage(int(existing.id))
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

    def ensure_storage(self, project_id: int) -> None:
        """Give the project a local-files storage on ``files_root`` so Label Studio serves its images."""
        if self.files_root is None or project_id in self._storages:
            return
        client, path = self.client, str(self.files_root)
        with client.errors(f"listing file storages of project {project_id}"):
            storages = client.sdk.import_storage.local.list(project=project_id, request_options=client.opts)
        if not any(getattr(s, "path", None) == path for s in storages):
            self.files_root.mkdir(parents=True, exist_ok=True)
            with client.errors(f"connecting {path} to project {project_id} as local-files storage"):
                client.sdk.import_storage.local.create(
                    project=project_id, path=path, use_blob_urls=True, title="juicer images", request_options=client.opts
                )
        self._storages.add(project_id)

    def ensure_queue_view(self, project_id: int) -> None:
        """Give the project its least-certain-first Data Manager tab (what the editor's queue follows)."""
        if project_id in self._views:
            return
        client = self.client
        with client.errors(f"listing the task tabs of project {project_id}"):
            views = client.sdk.views.list(project=project_id, request_options=client.opts)
            if not any(v.project == project_id and (v.data or {}).get("title") == QUEUE_VIEW_TITLE for v in views):
                client.sdk.views.create(project=project_id, data=dict(QUEUE_VIEW_DATA), request_options=client.opts)
        self._views.add(project_id)

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

    def model_version(self, project_id: int) -> str | None:
        """The project's model version (the one Uncertainty sampling orders by), None before the first."""
        client = self.client
        with client.errors(f"reading project {project_id}"):
            current = client.sdk.projects.get(id=project_id, request_options=client.opts)
        return current.model_version or None

    def follow_model_version(self, project_id: int, model_version: str) -> bool:
        """Set the project's model version (Uncertainty sampling orders only by that version's predictions);
        whether it changed. Never backwards: a project at a newer version (:func:`version_rank`) keeps it."""
        client = self.client
        with client.errors(f"reading project {project_id}"):
            current = client.sdk.projects.get(id=project_id, request_options=client.opts)
        target = model_version
        if current.model_version and version_rank(current.model_version) > version_rank(model_version):
            logger.warning("project %s stays at model version %s: %s is older", project_id, current.model_version, model_version)
            target = current.model_version
        if current.model_version != target or current.sampling != SAMPLING:
            with client.errors(f"setting project {project_id}'s model version to {target!r}"):
                client.sdk.projects.update(id=project_id, model_version=target, sampling=SAMPLING, request_options=client.opts)
        return current.model_version != target
