"""juicer as Label Studio's ML backend (/label-studio-ml), through Flask's test client with fakes at our seams.

Label Studio's side is what ``label_studio/ml/api_connector.py`` (1.23.2) sends; its file server is an
``httpx.MockTransport`` serving PNGs under ``/data/upload/``.
"""

from __future__ import annotations

import base64
import copy
import json
from pathlib import Path

import httpx
import pytest

from annotation.webhooks import annotation_record
from app.store import NewItem
from app.worker.scheduler import process_webhook_events
from tests.support.images import png
from tests.unit.app.conftest import COLOURS

PAYLOADS = Path(__file__).resolve().parents[1] / "annotation" / "payloads"
BASIC = "Basic " + base64.b64encode(b"label-studio:s3cret").decode()
# A project that is not juicer's: its own names, and classes in another order.
CONFIG = (
    '<View><Header value="Colour?"/><Image name="photo" value="$picture"/>'
    '<Choices name="colour" toName="photo"><Choice value="blue"/><Choice value="red"/><Choice value="green"/></Choices></View>'
)
LS_URL = "http://127.0.0.1:8080"  # the settings' default Label Studio (label_studio.port)


@pytest.fixture
def ml(app, services):
    """The test client with Label Studio's Basic auth, and a fake Label Studio file server."""
    files = {f"/data/upload/3/{name}.png": png(colour, seed=50 + i) for i, (name, colour) in enumerate(COLOURS.items())}
    seen: list[httpx.Request] = []

    def serve(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.headers.get("Authorization") != "Token ls-token-for-tests":
            return httpx.Response(401)
        body = files.get(request.url.path)
        return httpx.Response(200, content=body) if body else httpx.Response(404)

    services.task_images_transport = httpx.MockTransport(serve)
    client = app.test_client()
    client.environ_base["HTTP_AUTHORIZATION"] = BASIC
    client.files_seen = seen
    return client


class FakeScheduler:
    """This process's scheduler as the services see it (:class:`app.services.Waker`)."""

    running = True

    def __init__(self) -> None:
        self.woken: list[str] = []

    def wake(self, job_id: str) -> None:
        self.woken.append(job_id)


def test_every_route_needs_the_api_token_as_basic_password(client):
    client.environ_base.pop("HTTP_AUTHORIZATION")
    response = client.get("/label-studio-ml/health")
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith("Basic")
    wrong = "Basic " + base64.b64encode(b"u:wrong").decode()
    assert client.get("/label-studio-ml/health", headers={"Authorization": wrong}).status_code == 401
    for user in ("label-studio", "anyone"):
        good = "Basic " + base64.b64encode(f"{user}:s3cret".encode()).decode()
        answer = client.get("/label-studio-ml/", headers={"Authorization": good})
        assert answer.status_code == 200 and answer.json["status"] == "UP" and answer.json["model_class"] == "juicer"


def test_setup_answers_the_serving_version_and_refuses_unknown_choices_in_the_reason(ml, trained):
    response = ml.post("/label-studio-ml/setup", json={"project": "3.1764600000", "schema": CONFIG, "access_token": "t"})
    assert response.status_code == 200 and response.json == {"model_version": "v0001"}
    foreign = CONFIG.replace('value="green"', 'value="purple"')
    refused = ml.post("/label-studio-ml/setup", json={"project": "4.1764600000", "schema": foreign})
    assert refused.status_code == 422
    assert refused.json["unknown"] == ["purple"]
    # Label Studio's connection dialog shows str(HTTPError): status and reason phrase, so the reason says it.
    assert "purple" in refused.status and "not juicer classes" in refused.status
    no_choices = ml.post("/label-studio-ml/setup", json={"project": "5.1", "schema": '<View><Image name="i" value="$i"/></View>'})
    assert no_choices.status_code == 422 and "exactly one <Choices>" in no_choices.json["detail"]


def test_predict_answers_in_task_order_with_version_and_score_and_records_served_items(ml, trained):
    data_uri = "data:image/png;base64," + base64.b64encode(png(COLOURS["green"], seed=77)).decode()
    tasks = [
        {"id": 11, "project": 3, "data": {"picture": "/data/upload/3/red.png"}},
        {"id": 12, "project": 3, "data": {"picture": "http://169.254.169.254/latest/meta-data"}},
        {"id": 13, "project": 3, "data": {"picture": data_uri}},
        {"id": 14, "project": 3, "data": {"picture": f"{LS_URL}/data/upload/3/blue.png"}},
    ]
    response = ml.post("/label-studio-ml/predict", json={"tasks": tasks, "project": "3.1764600000", "label_config": CONFIG, "params": {}})
    assert response.status_code == 200, response.json
    results = response.json["results"]
    assert len(results) == 4
    labels = [r["result"][0]["value"]["choices"][0] if r else None for r in results]
    assert labels == ["red", None, "green", "blue"]
    for answer in (results[0], results[2], results[3]):
        assert answer["model_version"] == "v0001" and 0 < answer["score"] <= 1
        assert answer["result"][0]["from_name"] == "colour" and answer["result"][0]["to_name"] == "photo"
    assert response.json["errors"][0]["task"] == 12 and "not allowed" in response.json["errors"][0]["detail"]
    assert all(r.url.host == "127.0.0.1" for r in ml.files_seen)  # never the metadata address
    linked = trained.store.served_task_items("3", [11, 12, 13, 14])
    assert set(linked) == {11, 13, 14}
    item = trained.store.get_item(linked[11])
    assert item.split == "served" and item.prediction.model_version == "v0001"
    assert trained.store.review_counts().get("pending", 0) == 0  # Label Studio's annotators decide, not juicer's queue


def test_predict_uses_juicers_own_item_and_refuses_before_a_model(ml, services):
    refused = ml.post("/label-studio-ml/predict", json={"tasks": [], "project": "3.1", "label_config": CONFIG})
    assert refused.status_code == 503


def test_annotation_webhook_of_a_served_task_becomes_a_label(ml, trained):
    tasks = [{"id": 21, "project": 3, "data": {"picture": "/data/upload/3/green.png"}}]
    assert ml.post("/label-studio-ml/predict", json={"tasks": tasks, "project": "3.1", "label_config": CONFIG}).status_code == 200
    payload = json.loads((PAYLOADS / "annotation_created.json").read_text())
    event = copy.deepcopy(payload)
    event["project"] = {"id": 3, "label_config": CONFIG}
    event["task"].update(id=21, data={"picture": "/data/upload/3/green.png"})
    event["annotation"].update(id=901, task=21, result=[
        {"from_name": "colour", "to_name": "photo", "type": "choices", "value": {"choices": ["blue"]}}
    ])  # fmt: skip
    response = ml.post("/label-studio-ml/webhook", json=event)
    assert response.status_code == 200 and response.json["recorded"]
    trained.desk.hold(event)  # the annotator's real answer in Label Studio
    assert process_webhook_events(trained) == 1
    item_id = trained.store.served_task_items("3", [21])[21]
    assert trained.store.get_item(item_id).label.label == "blue"


def test_start_training_queues_a_job_and_answers_at_once(ml, trained):
    trained.scheduler = FakeScheduler()
    response = ml.post("/label-studio-ml/webhook", json={"action": "START_TRAINING", "project": {"id": 3}})
    assert response.status_code == 201
    assert [job.id for job in trained.store.queued_jobs(["retrain"])] == [response.json["job_id"]]
    assert trained.scheduler.woken == ["run-queued-jobs"]
    other = ml.post("/label-studio-ml/webhook", json={"action": "PROJECT_UPDATED", "project": {"id": 3}})
    assert other.status_code == 200 and other.json["status"] == "ignored"


def test_start_training_without_a_scheduler_is_a_503(ml, trained):
    response = ml.post("/label-studio-ml/webhook", json={"action": "START_TRAINING", "project": {"id": 3}})
    assert response.status_code == 503


@pytest.mark.parametrize(
    ("path", "body", "problem_type", "field"),
    [
        ("/label-studio-ml/predict", {"project": "3.1", "label_config": CONFIG}, "missing-field", "tasks"),
        ("/label-studio-ml/predict", {"project": "3.1", "label_config": CONFIG, "tasks": "all"}, "bad-field", "tasks"),
        ("/label-studio-ml/predict", {"project": "3.1", "label_config": CONFIG, "tasks": [1]}, "bad-field", "tasks[0]"),
        ("/label-studio-ml/setup", {"project": "3.1", "schema": CONFIG, "access_token": 7}, "bad-field", "access_token"),
        ("/label-studio-ml/webhook", {"action": ["START_TRAINING"]}, "bad-field", "action"),
    ],
)
def test_label_studio_bodies_are_checked_by_the_models_the_document_shows(ml, trained, path, body, problem_type, field):
    response = ml.post(path, json=body)
    assert response.status_code == 400 and response.mimetype == "application/problem+json"
    assert response.json["type"].endswith(problem_type) and response.json["field"] == field
    assert not trained.store.queued_jobs(["retrain"])  # nothing was done for a body that failed its model


def test_versions_lists_every_model_version(ml, trained):
    assert ml.get("/label-studio-ml/versions").json["versions"] == ["v0001"]


def test_an_annotation_event_without_credentials_counts_only_as_label_studio_has_it(ml, app, trained):
    tasks = [{"id": 31, "project": 3, "data": {"picture": "/data/upload/3/red.png"}}]
    assert ml.post("/label-studio-ml/predict", json={"tasks": tasks, "project": "3.1", "label_config": CONFIG}).status_code == 200
    region = lambda label: [{"from_name": "colour", "to_name": "photo", "type": "choices", "value": {"choices": [label]}}]  # noqa: E731
    held = {902: annotation_record({"id": 902, "task": 31, "project": 3, "result": region("red"), "completed_by": 1,
                                    "updated_at": "2026-12-01T21:00:00Z"})}  # fmt: skip
    trained.desk.get_annotation = held.get  # Label Studio's own record
    anonymous = app.test_client()
    forged = {"action": "ANNOTATION_CREATED", "project": {"id": 3}, "task": {"id": 31, "data": {}},
              "annotation": {"id": 902, "task": 31, "result": region("green"), "completed_by": 1}}  # fmt: skip
    assert anonymous.post("/label-studio-ml/webhook", json=forged).status_code == 200
    unknown = {**forged, "annotation": {**forged["annotation"], "id": 903}}
    assert anonymous.post("/label-studio-ml/webhook", json=unknown).status_code == 200
    assert anonymous.post("/label-studio-ml/webhook", json={"action": "START_TRAINING", "project": {"id": 3}}).status_code == 401
    assert process_webhook_events(trained) == 1
    item_id = trained.store.served_task_items("3", [31])[31]
    assert trained.store.get_item(item_id).label.label == "red"  # what Label Studio holds, not the body


def test_an_annotation_in_a_project_juicer_does_not_serve_is_dropped_and_counted(ml, app, trained):
    """Her own project, task and real annotation, with ``task.data.item_id`` naming a pool item: no label."""
    trained.store.add_items([NewItem("pool-1", "hash-pool-1", "pool/1", "pool", "images/pool-1.png")])
    region = [{"from_name": "colour", "to_name": "photo", "type": "choices", "value": {"choices": ["blue"]}}]
    held = annotation_record({"id": 950, "task": 77, "project": 66, "result": region, "completed_by": 5, "updated_at": "2026-12-01T21:00:00Z"})
    trained.desk.get_annotation = {950: held}.get  # real in Label Studio, in her project 66
    forged = {"action": "ANNOTATION_CREATED", "project": {"id": 66}, "task": {"id": 77, "data": {"item_id": "pool-1"}},
              "annotation": {"id": 950, "task": 77, "result": region, "completed_by": 5}}  # fmt: skip
    assert app.test_client().post("/label-studio-ml/webhook", json=forged).status_code == 200
    assert process_webhook_events(trained) == 0
    assert trained.store.get_item("pool-1").label is None
    assert trained.store.failed_events()[0].error.startswith("EventNotServedError")
    assert 'juicer_webhook_events{state="dropped"} 1.0' in ml.get("/metrics").get_data(as_text=True)


def test_a_task_of_another_project_naming_a_juicer_item_is_not_linked_to_it(ml, trained):
    trained.store.add_items([NewItem("pool-1", "hash-pool-1", "pool/1", "pool", "images/pool-1.png")])
    tasks = [{"id": 41, "project": 3, "data": {"item_id": "pool-1", "picture": "/data/upload/3/red.png"}}]
    assert ml.post("/label-studio-ml/predict", json={"tasks": tasks, "project": "3.1", "label_config": CONFIG}).status_code == 200
    assert trained.store.served_task_items("3", [41])[41] != "pool-1"  # the task's own image, not the named item


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"action": "ANNOTATION_CREATED", "task": {"id": "abc"}, "annotation": {"id": 1}}, "task.id"),
        ({"action": "ANNOTATION_CREATED", "annotation": {"id": "x"}}, "annotation.id"),
        ({"action": "ANNOTATION_UPDATED", "annotation": {"id": 1, "task": [1]}}, "annotation.task"),
        ({"action": "ANNOTATIONS_DELETED", "annotations": [{"id": "y"}]}, "annotations[0].id"),
    ],
)
def test_a_malformed_id_without_credentials_is_a_400_naming_it(app, trained, body, field):
    response = app.test_client().post("/label-studio-ml/webhook", json=body)
    assert response.status_code == 400 and response.json["field"] == field
    assert trained.store.pending_events() == []


@pytest.mark.postgres
def test_start_training_on_a_worker_without_the_scheduler_lease_is_queued_for_the_holder(postgres, settings, tmp_path):
    """Two workers on one PostgreSQL store, as gunicorn runs them: "Start training" sent to the one that does not hold
    the scheduler lease answers 201 (it answered 503 before), and the worker that holds it runs the retrain."""
    import time

    from app import create_app
    from app.core.serving import Embeddings, ModelHolder
    from app.core.training import Trainer
    from app.services import Services
    from app.store import Store
    from app.worker.leader import SchedulerLease
    from app.worker.scheduler import Scheduler
    from learner.cache import EmbeddingCache
    from tests.unit.app.conftest import CLASSES, FakeBackbone, FakeDesk, FakeProject, logistic_head

    url = postgres.new_database()

    def worker(name: str) -> Services:
        store = Store.from_url(url)
        store.set_meta("classes", list(CLASSES))
        embeddings = Embeddings(FakeBackbone(), EmbeddingCache(tmp_path / f"embeddings-{name}", FakeBackbone.id))
        models = ModelHolder()
        trainer = Trainer(store, embeddings, models, settings.service, tmp_path, CLASSES, 1_000_000, head_factory=logistic_head)
        services = Services(settings, store, CLASSES, embeddings, models, trainer, desk=FakeDesk(), project=FakeProject())
        services.scheduler_elsewhere = True  # as app.http.server sets it in every gunicorn worker
        return services

    holder, other = worker("holder"), worker("other")
    holder_app, other_app = create_app(services=holder), create_app(services=other)
    seed = holder_app.test_client()
    seed.environ_base["HTTP_AUTHORIZATION"] = "Bearer s3cret"
    entries = [{"image": base64.b64encode(png(COLOURS[name], seed=10 * k + i)).decode(), "label": name}
               for k, name in enumerate(CLASSES) for i in range(2)]  # fmt: skip
    for batch in (entries[:3], entries[3:]):  # at most 4 images per request in these settings
        assert seed.post("/v1/labels", json={"labels": batch}).status_code == 201

    holder_lease = SchedulerLease(holder.store, tmp_path)
    other_lease = SchedulerLease(other.store, tmp_path)
    scheduler = Scheduler(holder)
    try:
        assert holder_lease.try_acquire()
        scheduler.start()
        assert not other_lease.try_acquire() and other.scheduler is None  # this worker runs no scheduler
        label_studio = other_app.test_client()
        label_studio.environ_base["HTTP_AUTHORIZATION"] = BASIC
        response = label_studio.post("/label-studio-ml/webhook", json={"action": "START_TRAINING", "project": {"id": 3}})
        assert response.status_code == 201, response.json
        job_id = response.json["job_id"]
        deadline = time.monotonic() + 30
        while other.store.get_job(job_id).status in ("queued", "running"):
            assert time.monotonic() < deadline, "the lease holder did not run the queued retrain"
            time.sleep(0.05)
        job = other.store.get_job(job_id)
        assert job.status == "done", job
        assert job.result["version"] == "v0001" and holder.models.current.version == "v0001"
    finally:
        scheduler.shutdown()
        holder_lease.release()
        other_lease.release()
        holder.store.close()
        other.store.close()


# -- the holdout in a project juicer did not create (issue 19, item 2's last sentence) -------------------------
def _holdout_queued(services) -> None:
    from tests.unit.app.test_app_holdout import _holdout_on, _pool
    from app.worker.scheduler import refresh_queue

    _holdout_on(services)
    _pool(services, 4)
    refresh_queue(services)


def test_a_connected_project_gets_the_holdout_blind_and_only_its_own_task_answer_lands_there(ml, trained):
    from app.store import HOLDOUT_VERSION, utcnow
    from annotation.models import LabelEvent
    from app.worker.scheduler import deliver_outbox

    assert ml.post("/label-studio-ml/setup", json={"project": "3.1764600000", "schema": CONFIG}).status_code == 200
    _holdout_queued(trained)
    due = trained.store.due_reviews(100)
    blind = {row.item_id for row in due if row.model_version == HOLDOUT_VERSION}
    assert blind and deliver_outbox(trained) == len(due)
    created = trained.desk.elsewhere[3]
    assert {task["data"]["item_id"] for task in created} == blind  # in project 3, under its own image key
    assert all(task["blind"] and task["label"] is None and "picture" in task["data"] for task in created)
    assert not any(task["request"].blind for task in trained.desk.tasks.values())  # none in juicer's own project
    assert ml.get("/label-studio-ml/health").json["holdout"] == f"holdout: {len(blind)} tasks created blind in project 3"

    task = created[0]
    asked = ml.post("/label-studio-ml/predict", json={"tasks": [{"id": task["id"], "data": {"picture": "/data/upload/3/red.png"}}],
                                                      "project": "3.1", "label_config": CONFIG})  # fmt: skip
    assert asked.status_code == 200 and asked.json["results"] == [[]]  # no guess to anchor the annotator
    assert ml.files_seen == []  # nor its image fetched
    other_task = LabelEvent(task["data"]["item_id"], task["id"] + 1000, 951, "red", "7", utcnow(), "set")
    assert trained.store.apply_label_events([other_task]) == 0  # another task showing the image: not blind
    own_task = LabelEvent(task["data"]["item_id"], task["id"], 952, "red", "7", utcnow(), "set")
    assert trained.store.apply_label_events([own_task]) == 1
    assert [row.item_id for row in trained.store.current_labels(holdout=True)] == [task["data"]["item_id"]]


def test_without_access_to_the_connected_project_health_says_why_and_what_to_do(ml, trained):
    from annotation.errors import LabelStudioRejected
    from app.worker.scheduler import deliver_outbox

    ml.post("/label-studio-ml/setup", json={"project": "3.1764600000", "schema": CONFIG})
    _holdout_queued(trained)
    trained.desk.refused_elsewhere = LabelStudioRejected("importing 3 holdout tasks into project 3: 403 Forbidden", status=403)
    deliver_outbox(trained)
    status = ml.get("/label-studio-ml/health").json["holdout"]
    assert status.startswith("holdout: cannot create tasks in project 3: importing 3 holdout tasks into project 3: 403")
    assert "; do make the user of label_studio.token a member of project 3's organization" in status
    assert "meanwhile holdout tasks go to juicer's own project 1" in status
    assert any(task["request"].blind for task in trained.desk.tasks.values())  # labelled blind there meanwhile
    report = ml.get("/report", headers={"Authorization": "Bearer s3cret"}).get_data(as_text=True)
    assert "holdout: cannot create tasks in project 3:" in report and "a member of project 3&#39;s organization" in report


def test_juicers_own_project_connected_as_ml_backend_keeps_its_holdout_as_it_is(ml, trained):
    from app.worker.scheduler import deliver_outbox

    ml.post("/label-studio-ml/setup", json={"project": "1.1764600000", "schema": CONFIG})  # FakeProject.id
    _holdout_queued(trained)
    deliver_outbox(trained)
    assert trained.desk.elsewhere == {} and "holdout" not in ml.get("/label-studio-ml/health").json
