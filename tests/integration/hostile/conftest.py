"""The hostile-annotator suite's world: ``juicer serve`` with default settings (it starts its own Label Studio, as
the demo does) and "mallory", who joined that Label Studio through its invite link as annotators do.

The suite attacks juicer as issue 21 tells it, through the doors a member of the Label Studio organisation has:
Label Studio's own API with her token, and juicer's unauthenticated or secret-guarded doors. Each test asserts
the fixed behaviour (the attack fails) and that the legitimate path beside it still works. The tests share one
service (package scope) and take juicer's own review tasks one at a time from :meth:`Hostile.take_task`.

A negative ("no label was written") waits for a later genuine answer to become a label first
(:meth:`Hostile.answer_as_owner`): recorded events are applied oldest first, so once the marker counts, the
forged events recorded before it were judged.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest

from annotation.labelconfig import CHOICES_NAME, IMAGE_NAME
from annotation.models import Project
from simulate.annotator import AnnotatorDesk, NextTask
from tests.support.images import png
from tests.support.served import REPO, ServedJuicer, data_folder, subprocess_env

#: The files juicer keeps its secrets in (app.core.secrets), wherever a data folder puts them.
SECRET_FILES = ("webhook-secret", "api-token", "label-studio-token", "label-studio-password")
MALLORY = ("mallory@evil.test", "mallory-pw-1")


def walk_files(root: Path) -> Iterator[Path]:
    """Every file under ``root``, symlinks not followed (the shared embedding cache is a link)."""
    for folder, _, names in os.walk(root, followlinks=False):
        for name in names:
            path = Path(folder) / name
            if not path.is_symlink():
                yield path


def choices_result(label: str) -> list[dict[str, Any]]:
    """An annotation ``result`` choosing ``label`` in juicer's labelling config."""
    return [{"from_name": CHOICES_NAME, "to_name": IMAGE_NAME, "type": "choices", "value": {"choices": [label]}}]


def event(action: str, annotation_id: Any, task_id: Any, item_id: Any, label: str, at: str, project_id: Any = None) -> dict:
    """A Label Studio annotation webhook body as an attacker writes it (every field hers to choose)."""
    body: dict[str, Any] = {
        "action": action,
        "annotation": {"id": annotation_id, "task": task_id, "completed_by": 1, "created_at": at, "updated_at": at,
                       "was_cancelled": False, "result": choices_result(label)},
        "task": {"id": task_id, "data": {"item_id": item_id}},
    }  # fmt: skip
    if project_id is not None:
        body["project"] = {"id": project_id}
    return body


@dataclass
class Hostile:
    """The service under attack, its Label Studio, the owner's and mallory's tokens (see the module docstring)."""

    service: ServedJuicer
    root: Path
    ls_url: str
    owner_token: str
    mallory_token: str
    project: Project  # juicer's own project in Label Studio
    classes: list[str]
    tasks: list[NextTask]  # juicer's own review tasks, as delivered before mallory joined
    used: set[int] = field(default_factory=set)

    @property
    def data_dir(self) -> Path:
        return self.service.data_dir

    def take_task(self) -> NextTask:
        """One of juicer's own review tasks no test used yet."""
        for task in self.tasks:
            if task.task_id not in self.used:
                self.used.add(task.task_id)
                return task
        raise AssertionError("the suite ran out of juicer's review tasks: deliver more (service.review_batch_size)")

    def ls(self, token: str) -> httpx.Client:
        """A Label Studio API client with ``token`` (a member's legacy token, as the UI's account page shows it)."""
        return httpx.Client(base_url=self.ls_url, headers={"Authorization": f"Token {token}"}, timeout=60)

    def desk(self, token: str) -> AnnotatorDesk:
        """A person's moves in Label Studio's editor with ``token``."""
        return AnnotatorDesk(self.ls_url, token, timeout_s=30)

    def juicer(self, **headers: str) -> httpx.Client:
        """A client of juicer's doors with no credentials but ``headers``."""
        return httpx.Client(base_url=self.service.url, headers=headers, timeout=60)

    def label(self, item_id: str) -> str | None:
        """The item's current label in juicer, None when it has none."""
        with self.service.client() as client:
            response = client.get(f"/v1/items/{item_id}")
            assert response.status_code == 200, response.text
            return (response.json().get("label") or {}).get("label")

    def wait_label(self, item_id: str, label: str, timeout_s: float = 90) -> None:
        """Wait until juicer holds ``label`` for ``item_id``."""
        self.service.wait_for(lambda: self.label(item_id) == label, timeout_s, f"label {label!r} on {item_id}")

    def answer_as_owner(self, label: str | None = None) -> tuple[NextTask, int]:
        """The owner answers one of juicer's tasks in the editor and waits until it is a label (the legitimate
        path, and the suite's barrier: every event recorded before it has been judged)."""
        task = self.take_task()
        label = label or self.classes[len(self.used) % len(self.classes)]
        with self.desk(self.owner_token) as desk:
            annotation_id = desk.submit_annotation(task.task_id, label, prediction_id=task.prediction_id)
        self.wait_label(task.item_id, label)
        return task, annotation_id

    def secret_values(self) -> dict[str, str]:
        """Every secret juicer and its Label Studio keep on disk: file name (or ``.env:KEY``) -> value."""
        found: dict[str, str] = {}
        for path in walk_files(self.root):
            if path.name in SECRET_FILES:
                found[path.name] = path.read_text().strip()
            elif path.name == ".env":
                for line in path.read_text(errors="replace").splitlines():
                    key, _, value = line.partition("=")
                    if "SECRET" in key.upper() and len(value.strip().strip("'\"")) >= 8:
                        found[f".env:{key.strip()}"] = value.strip().strip("'\"")
        assert {"webhook-secret", "api-token", "label-studio-token"} <= set(found), f"secrets not found: {sorted(found)}"
        return found

    def new_project(self, token: str, title: str, n_images: int = 3) -> tuple[int, list[dict[str, Any]]]:
        """A project made by ``token``'s user with juicer's labelling config and ``n_images`` uploaded PNGs; its
        id and tasks (each with a ``/data/upload/`` image)."""
        with self.desk(token) as desk:
            project = desk.ensure_project(self.classes, title)
        files = [(f"p{seed}.png", (f"p{seed}.png", png((40 * seed % 255, 90, 160), (32, 32), seed=seed), "image/png"))
                 for seed in range(n_images)]  # fmt: skip
        with self.ls(token) as http:
            imported = http.post(f"/api/projects/{project.id}/import", files=files)
            assert imported.status_code == 201, imported.text
            tasks = http.get("/api/tasks/", params={"project": project.id, "page_size": 100}).json()
        return project.id, list(tasks["tasks"] if isinstance(tasks, dict) else tasks)


def _juicer_tasks(desk: AnnotatorDesk, project: Project) -> list[NextTask]:
    tasks = [task for task in desk.open_tasks(project) if task.item_id not in ("None", "")]
    return tasks if len(tasks) >= 15 else []


@pytest.fixture(scope="package")
def hostile(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hostile]:
    """``juicer serve`` (demo, default settings, its own Label Studio) and mallory, joined through the invite link."""
    from tests.support.served import free_port

    root = tmp_path_factory.mktemp("hostile")
    data_dir = data_folder(root)
    port = free_port()
    env = subprocess_env(
        data_dir,
        JUICER_SERVICE__PORT=str(port),
        JUICER_LABEL_STUDIO__PORT=str(free_port()),
        JUICER_LABEL_STUDIO__VENV=os.environ.get("JUICER_TEST_LS_VENV", str(REPO / ".venv-ls")),
        JUICER_LEARNER__BACKBONE=str(REPO / "data" / "backbones" / "efficientnet-lite0"),
        # Quicker rounds only: no security setting is touched.
        JUICER_SERVICE__DELIVER_INTERVAL_S="1",
        JUICER_SERVICE__WEBHOOK_INTERVAL_S="1",
        JUICER_SERVICE__CONNECT_INTERVAL_S="1",
        JUICER_SERVICE__RETRAIN_AFTER_LABELS="1000",
    )  # fmt: skip
    service = ServedJuicer(data_dir, port, env)
    service.start()
    try:
        with service.client() as client:
            service.wait_for(lambda: client.get("/readyz").json()["status"] == "ready", 240, "juicer connected to its Label Studio")
            classes = list(client.get("/v1/models/current").json()["classes"])
        ls_token = next(path for path in walk_files(root) if path.name == "label-studio-token").read_text().strip()
        ls_port = env["JUICER_LABEL_STUDIO__PORT"]
        ls_url = f"http://127.0.0.1:{ls_port}"
        with AnnotatorDesk(ls_url, ls_token, timeout_s=30) as desk:
            project = desk.ensure_project(classes, "juicer")  # juicer's own (the default title): found, not made
            tasks = service.wait_for(lambda: _juicer_tasks(desk, project), 240, "juicer's review tasks in Label Studio")
            mallory = desk.invite_annotator(*MALLORY)
        yield Hostile(service, root, ls_url, ls_token, mallory, project, classes, tasks)
    finally:
        service.stop()
