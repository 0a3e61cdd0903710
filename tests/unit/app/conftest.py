"""Fakes at the service's own seams: a tiny backbone, a scikit-learn head, an in-memory Label Studio desk."""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from annotation.errors import AnnotationError
from annotation.reviews import request_key
from annotation.models import Annotation, LabelEvent, PullCursor, ReviewTask, SeenAnnotation, Task
from annotation.webhooks import annotation_record, task_record
from app.core.serving import Embeddings, ModelHolder
from app.services import Services
from app.store import Store
from app.core.training import Trainer
from config import load_settings
from learner.cache import EmbeddingCache
from tests.support.images import png

CLASSES = ("red", "green", "blue")
COLOURS = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (20, 40, 230)}


class FakeBackbone:
    """8x8 pixels flattened: colour is all a linear head needs to tell these images apart."""

    id = "fake-8x8"
    input_size = (8, 8)
    batch_size = 4
    dim = 192

    def __init__(self) -> None:
        self.calls = 0

    def embed(self, pixels: np.ndarray) -> np.ndarray:
        self.calls += 1
        return np.asarray(pixels, dtype=np.float32).reshape(len(pixels), -1)


class FakeDesk:
    """Label Studio as the jobs see it; ``down`` makes every call fail as an unreachable server does."""

    def __init__(self) -> None:
        self.down = False
        self.tasks: dict[str, dict[str, Any]] = {}
        self.events: list[LabelEvent] = []
        self.cursors: list[PullCursor | None] = []  # what each pull_labels call was handed
        self.annotations: dict[int, Annotation] = {}  # what Label Studio holds (get_annotation)
        self.task_records: dict[int, Task] = {}  # (get_task)
        self.ensured: list[list[str]] = []  # the class list of each ensure_project call
        self.elsewhere: dict[int, list[dict[str, Any]]] = {}  # project id -> the task bodies created there
        self.refused_elsewhere: AnnotationError | None = None  # what send_blind_elsewhere raises, when set
        self._ids = itertools.count(1)

    def _check(self) -> None:
        if self.down:
            raise AnnotationError("Label Studio at http://127.0.0.1:1 refused the connection", retryable=True)

    def health(self) -> bool:
        return not self.down

    def ensure_project(self, classes: Any, title: str) -> Any:
        self._check()
        self.ensured.append(list(classes))
        return FakeProject(classes)

    def register_webhook(self, project: Any, url: str, secret: str) -> int:
        self._check()
        self.webhook = (url, secret)
        return 1

    def send_for_review(self, project: Any, requests: list[Any]) -> list[ReviewTask]:
        self._check()
        out = []
        for request in requests:
            key = request_key(request)  # a second look: a task of its own (one per look)
            created = key not in self.tasks
            task_id = next(self._ids) if created else self.tasks[key]["task_id"]
            self.tasks[key] = {"task_id": task_id, "request": request}
            out.append(ReviewTask(request.item_id, task_id, created))
        return out

    def send_blind_elsewhere(self, project_id: int, image_key: str, requests: list[Any]) -> list[ReviewTask]:
        self._check()
        if self.refused_elsewhere is not None:
            raise self.refused_elsewhere
        out = []
        for request in requests:
            task_id = next(self._ids)
            self.elsewhere.setdefault(project_id, []).append({"id": task_id, "data": {image_key: request.image, "item_id": request.item_id},
                                                              "blind": request.blind, "label": request.label})
            out.append(ReviewTask(request.item_id, task_id, True))
        return out

    def prune_predictions(self, project: Any) -> list[str]:
        self._check()
        return []

    def hold(self, payload: dict[str, Any]) -> None:
        """Label Studio holds the annotation and task a real webhook body describes (as it does when it sends one)."""
        task = payload["task"]
        project = payload.get("project")
        project_id = project.get("id") if isinstance(project, dict) else project
        held = annotation_record({**payload["annotation"], "project": project_id}, task.get("id"))
        self.annotations[held.id] = held
        self.task_records[int(task["id"])] = task_record({**task, "project": project_id})

    def get_annotation(self, annotation_id: int) -> Annotation | None:
        self._check()
        return self.annotations.get(annotation_id)

    def get_task(self, task_id: int) -> Task | None:
        self._check()
        return self.task_records.get(task_id)

    def pull_labels(self, project: Any, cursor: PullCursor | None = None) -> tuple[list[LabelEvent], PullCursor]:
        """Like the real desk: only the events the cursor has not seen, and a cursor that has seen them all."""
        self._check()
        self.cursors.append(cursor)
        seen = dict(cursor.seen) if cursor is not None else {}
        new = [event for event in self.events if event.annotation_id not in seen]
        for event in new:
            seen[event.annotation_id] = SeenAnnotation(event.item_id or "", event.task_id or 0, event.label or "", event.annotator, "")
        return new, PullCursor(project.id, seen)


class FakeProject:
    id = 1
    title = "test"
    url = "http://127.0.0.1:1/projects/1"

    def __init__(self, classes: Any = CLASSES) -> None:
        self.classes = tuple(classes)


def logistic_head(previous: Any) -> Any:
    return LogisticRegression(max_iter=500)


@pytest.fixture
def settings(tmp_path):
    return load_settings(
        environ={},
        data_dir=tmp_path,
        service={"classes": list(CLASSES), "retrain_after_labels": 3, "review_batch_size": 2, "max_request_bytes": 200_000,
                 "max_images_per_request": 4, "max_request_pixels": 2_000_000, "api_token": "s3cret",
                 # these fixtures count the active picks exactly; test_app_holdout.py turns the reserved holdout on
                 "holdout": {"reserve": False},
                 # the label checks' tests ask again with a handful of labels a class (one tests the default's gate)
                 "second_looks_from_per_class": 0},
        learner={"max_image_pixels": 1_000_000},
        label_studio={"webhook_secret": "hook-secret-123", "token": "ls-token-for-tests"},
    )


@pytest.fixture
def services(settings, tmp_path):
    store = Store.open(tmp_path)
    store.set_meta("classes", list(CLASSES))
    embeddings = Embeddings(FakeBackbone(), EmbeddingCache(tmp_path / "embeddings", FakeBackbone.id))
    models = ModelHolder()
    trainer = Trainer(store, embeddings, models, settings.service, tmp_path, CLASSES, 1_000_000, head_factory=logistic_head)
    svc = Services(settings, store, CLASSES, embeddings, models, trainer, desk=FakeDesk(), project=FakeProject())
    yield svc
    store.close()


@pytest.fixture
def app(services):
    from app import create_app

    return create_app(services=services)


@pytest.fixture
def client(app):
    client = app.test_client()
    client.environ_base["HTTP_AUTHORIZATION"] = "Bearer s3cret"
    return client


@pytest.fixture
def trained(client, services):
    """Two seed images per class through POST /v1/labels, then a first model."""
    import base64

    entries = [
        {"image": base64.b64encode(png(COLOURS[name], seed=10 * k + i)).decode(), "label": name}
        for k, name in enumerate(CLASSES)
        for i in range(2)
    ]
    for batch in (entries[:3], entries[3:]):
        response = client.post("/v1/labels", json={"labels": batch})
        assert response.status_code == 201, response.json
    result = services.trainer.retrain(reason="test")
    assert result.version == "v0001"
    return services


def delivered_as_task(store: Any, item_id: str, task_id: int) -> None:
    """Record that juicer delivered ``item_id`` to its Label Studio project as task ``task_id`` (the outbox link the
    label intake trusts, as :func:`app.core.delivery.deliver_outbox` leaves it)."""
    from app.store import NewPrediction

    store.queue_reviews([NewPrediction(item_id, "none", "", 0.0, {}, "review", "cold-start")])
    store.mark_delivered({item_id: task_id}, {item_id: "none"})
