"""The annotators' desk: juicer's only conversation with Label Studio, one facade over the rooms that do the work.

One :class:`LabelStudioDesk` talks to one server with one API token (Label Studio's legacy token; see
:mod:`annotation.launcher`). Every method returns juicer's own records (:mod:`annotation.models`) and turns every
failure into an :class:`~annotation.errors.AnnotationError`; every request has a timeout and none is retried
here (the caller owns retry policy, guided by ``retryable``). The rooms:

- :mod:`annotation.client`: the HTTP client, the SDK over it, and the error mapping;
- :mod:`annotation.projects`: the project, its labelling config, its queue tab and its file storage;
- :mod:`annotation.reviews`: sending review tasks and re-scoring them in bulk;
- :mod:`annotation.labels`: pulling labels, webhooks, annotators;
- :mod:`simulate.annotator`: a person's moves in the editor, for ``juicer simulate`` and tests only.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import httpx

from annotation.client import LabelStudioClient
from annotation.labels import Labels
from annotation.models import Annotation, LabelEvent, Project, PullCursor, ReviewRequest, ReviewTask, Task
from annotation.projects import Projects
from annotation.reviews import Reviews
from config import Settings


class LabelStudioDesk:
    """Label Studio as juicer sees it: projects, review tasks with pre-annotations, labels coming back.

    ``files_root``: the folder whose images are served through Label Studio's local-files storage (the server
    must run with its parent as LOCAL_FILES_DOCUMENT_ROOT, as :class:`annotation.launcher.LabelStudioLauncher`
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
        self.client = LabelStudioClient(url, token, timeout_s=timeout_s, transport=transport)
        self.labels = Labels(self.client)
        self.projects = Projects(self.client, files_root, self.labels.label_counts)
        self.reviews = Reviews(self.client, self.projects)

    @property
    def url(self) -> str:
        """The server's base URL."""
        return self.client.url

    @property
    def files_root(self) -> Path | None:
        """The folder served through the local-files storage."""
        return self.projects.files_root

    @property
    def timeout_s(self) -> float:
        """The timeout of each call."""
        return self.client.timeout_s

    def close(self) -> None:
        """Close the HTTP connections."""
        self.client.close()

    def __enter__(self) -> "LabelStudioDesk":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def health(self) -> bool:
        """True when the server answers ``/health`` with UP within the timeout; never raises."""
        return self.client.health()

    def project_url(self, project_id: int) -> str:
        """Where a person opens the project's task list."""
        return self.projects.project_url(project_id)

    def ensure_project(self, classes: Sequence[str], title: str) -> Project:
        """Create or reuse juicer's project titled ``title`` over ``classes`` (:meth:`Projects.ensure_project`)."""
        return self.projects.ensure_project(classes, title)

    def image_url(self, image: str) -> str:
        """The task's image value for a path under ``files_root`` or an http(s) URL."""
        return self.projects.image_url(image)

    def send_for_review(self, project: Project, requests: Sequence[ReviewRequest]) -> list[ReviewTask]:
        """Put items in front of annotators with the model's guess pre-selected (:meth:`Reviews.send_for_review`)."""
        return self.reviews.send_for_review(project, requests)

    def send_blind_elsewhere(self, project_id: int, image_key: str, requests: Sequence[ReviewRequest]) -> list[ReviewTask]:
        """Holdout items as blind tasks in a project juicer did not create (:meth:`Reviews.send_blind_elsewhere`)."""
        return self.reviews.send_blind_elsewhere(project_id, image_key, requests)

    def prune_predictions(self, project: Project) -> list[str]:
        """Delete the prediction versions no open editor can point at (:meth:`Reviews.prune`); returns them."""
        return self.reviews.prune(project)

    def pull_labels(self, project: Project, cursor: PullCursor | None = None) -> tuple[list[LabelEvent], PullCursor]:
        """Label events since ``cursor`` and the cursor to pass next time (:meth:`Labels.pull_labels`)."""
        return self.labels.pull_labels(project, cursor)

    def annotator_emails(self) -> dict[str, str]:
        """Label Studio user id (as in :attr:`LabelEvent.annotator`) -> the user's email."""
        return self.labels.annotator_emails()

    def get_annotation(self, annotation_id: int) -> Annotation | None:
        """One annotation as Label Studio holds it now, or None when it does not exist."""
        return self.labels.get_annotation(annotation_id)

    def get_task(self, task_id: int) -> Task | None:
        """One task as Label Studio holds it now, or None when it does not exist (:meth:`Labels.get_task`)."""
        return self.labels.get_task(task_id)

    def register_webhook(self, project: Project, url: str, secret: str) -> int:
        """Have Label Studio POST annotation events for ``project`` to ``url`` with ``secret`` (idempotent)."""
        return self.labels.register_webhook(project, url, secret)


def desk_from_settings(
    settings: Settings, url: str | None = None, desk_class: type[LabelStudioDesk] | None = None
) -> LabelStudioDesk:
    """The desk for ``settings.label_studio``: at ``url`` if given, else its ``url`` setting, else the server juicer
    runs, at the port it really took (Label Studio silently moves off a busy port).

    ``desk_class``: a subclass to build instead (``juicer simulate`` passes :class:`simulate.annotator.AnnotatorDesk`).
    """
    from annotation.launcher import launcher_from_settings  # the launcher is only needed for its URL here

    ls = settings.label_studio
    url = url or ls.url or launcher_from_settings(settings).url
    return (desk_class or LabelStudioDesk)(url, ls.token, files_root=settings.images_dir, timeout_s=ls.timeout_s)
