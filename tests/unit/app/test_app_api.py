"""The HTTP API through Flask's test client, with fakes at our seams (backbone, head, Label Studio)."""

from __future__ import annotations

import base64
import io
import struct
import zlib

import pytest

from app.core.datadir import image_file
from annotation.models import LabelEvent
from app.store import NewItem, utcnow
from tests.support.images import png
from tests.unit.app.conftest import CLASSES, COLOURS, delivered_as_task

PROBLEM = "application/problem+json"


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def pixel_bomb(width: int = 30_000, height: int = 30_000) -> bytes:
    """A valid PNG header claiming width x height pixels, with a tiny compressed body."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    body = zlib.compress(b"\x00" * 1000)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", body) + chunk(b"IEND", b"")


def assert_problem(response, status: int) -> dict:
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == PROBLEM
    body = response.json
    assert body["status"] == status and body["title"] and "Traceback" not in response.get_data(as_text=True)
    return body


def assert_still_serving(client) -> None:
    assert client.get("/healthz").status_code == 200
    response = client.post("/v1/predict", json={"image": b64(png(COLOURS["green"], seed=999))})
    assert response.status_code == 200, response.json


@pytest.mark.parametrize("rule, threshold, decision", [("threshold", 1.0, "review"), ("argmax", 0.8, "accept")])
def test_predict_multipart_gives_every_field_and_queues_reviews_in_the_outbox(client, trained, rule, threshold, decision):
    trained.settings.service.decision_rule, trained.settings.service.decision_threshold = rule, threshold
    files = {"image": (io.BytesIO(png(COLOURS["blue"], seed=5)), "blue.png")}
    response = client.post("/v1/predict", data=files, content_type="multipart/form-data")
    assert response.status_code == 200, response.json
    [prediction] = response.json["predictions"]
    assert set(prediction) >= {"item_id", "label", "probabilities", "decision", "rule", "model_version"}
    assert prediction["label"] == "blue"
    assert set(prediction["probabilities"]) == set(CLASSES)
    assert prediction["model_version"] == "v0001"
    assert (prediction["decision"], prediction["rule"]) == (decision, rule)
    item = trained.store.get_item(prediction["item_id"])
    assert item.split == "served" and item.prediction.model_version == "v0001"
    assert image_file(trained.data_dir, item.image_path).read_bytes() == png(COLOURS["blue"], seed=5)
    due = [row.item_id for row in trained.store.due_reviews(10)]
    assert due == ([prediction["item_id"]] if decision == "review" else [])


def test_predictions_are_counted_by_decision_in_metrics(client, trained):
    from prometheus_client.parser import text_string_to_metric_families

    trained.settings.service.decision_threshold = 1.0
    client.post("/v1/predict", json={"images": [b64(png(COLOURS["red"], seed=s)) for s in (70, 71)]})
    trained.settings.service.decision_rule = "argmax"
    client.post("/v1/predict", json={"image": b64(png(COLOURS["red"], seed=72))})
    counts = {
        sample.labels["decision"]: sample.value
        for family in text_string_to_metric_families(client.get("/metrics").get_data(as_text=True))
        for sample in family.samples if sample.name == "juicer_predictions_total"
    }  # fmt: skip
    assert counts == {"review": 2, "accept": 1}


def test_predict_json_many_and_review_rule_routes_to_outbox(client, trained):
    trained.settings.service.decision_threshold = 1.0  # nothing is certain enough: everything is reviewed
    images = [b64(png(COLOURS[name], seed=50 + i)) for i, name in enumerate(CLASSES)]
    response = client.post("/v1/predict", json={"images": images})
    assert response.status_code == 200
    predictions = response.json["predictions"]
    assert [p["label"] for p in predictions] == list(CLASSES)
    assert all(p["decision"] == "review" for p in predictions)
    due = {row.item_id for row in trained.store.due_reviews(10)}
    assert due >= {p["item_id"] for p in predictions}


def test_predict_before_any_model_is_a_503_problem(client):
    body = assert_problem(client.post("/v1/predict", json={"image": b64(png(COLOURS["red"]))}), 503)
    assert body["type"].endswith("no-model")


@pytest.mark.parametrize(
    "case, status",
    [
        ("not-an-image", 422),
        ("truncated", 422),
        ("pixel-bomb", 413),
        ("oversized", 413),
        ("too-many", 413),
        ("missing-field", 400),
        ("bad-base64", 400),
        ("no-body", 400),
        ("wrong-token", 401),
        ("no-token", 401),
    ],
)
def test_bad_predict_inputs_get_a_4xx_problem_and_the_service_keeps_serving(client, trained, case, status):
    good = png(COLOURS["red"], seed=1)
    headers = {}
    if case == "not-an-image":
        kwargs = {"json": {"image": b64(b"this is plain text, not a picture")}}
    elif case == "truncated":
        kwargs = {"json": {"image": b64(good[: len(good) // 2])}}
    elif case == "pixel-bomb":
        kwargs = {"json": {"image": b64(pixel_bomb())}}
    elif case == "oversized":
        kwargs = {"data": {"image": (io.BytesIO(b"\x89PNG" + b"\x00" * 300_000), "big.png")}, "content_type": "multipart/form-data"}
    elif case == "too-many":
        kwargs = {"json": {"images": [b64(png(COLOURS["red"], seed=s)) for s in range(5)]}}
    elif case == "missing-field":
        kwargs = {"json": {"picture": b64(good)}}
    elif case == "bad-base64":
        kwargs = {"json": {"image": "@@not base64@@"}}
    elif case == "no-body":
        kwargs = {}
    elif case == "wrong-token":
        kwargs = {"json": {"image": b64(good)}}
        headers = {"Authorization": "Bearer guessed"}
    else:
        kwargs = {"json": {"image": b64(good)}}
        headers = {"Authorization": ""}
    before = trained.store.prediction_counts()
    response = client.post("/v1/predict", headers=headers, **kwargs)
    assert_problem(response, status)
    if status == 401:
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert trained.store.prediction_counts() == before
    assert_still_serving(client)


def test_labels_for_known_items_unknown_labels_and_unknown_items(client, services):
    services.store.add_items([NewItem("p1", "h1", "pool/1", "pool", "images/p1.png")])
    response = client.post("/v1/labels", json={"labels": [{"item_id": "p1", "label": "red", "annotator": "ann"}]})
    assert response.status_code == 201
    assert response.json["labels"][0]["item_id"] == "p1"
    assert [row.label for row in services.store.current_labels()] == ["red"]
    body = assert_problem(client.post("/v1/labels", json={"labels": [{"item_id": "p1", "label": "purple"}]}), 422)
    assert body["classes"] == list(CLASSES)
    assert_problem(client.post("/v1/labels", json={"labels": [{"item_id": "nope", "label": "red"}]}), 404)
    assert_problem(client.post("/v1/labels", json={"labels": [{"label": "red"}]}), 400)
    assert_problem(client.post("/v1/labels", data="x", content_type="text/plain"), 415)
    assert len(services.store.current_labels()) == 1


def test_labels_with_multipart_images_create_seed_items(client, services):
    data = {"image": (io.BytesIO(png(COLOURS["green"], seed=3)), "g.png"), "label": "green"}
    response = client.post("/v1/labels", data=data, content_type="multipart/form-data")
    assert response.status_code == 201, response.json
    item = services.store.get_item(response.json["labels"][0]["item_id"])
    assert item.split == "seed" and item.label.label == "green"


def test_items_go_to_the_pool_once(client, services):
    image = b64(png(COLOURS["red"], seed=77))
    first = client.post("/v1/items", json={"images": [image]})
    again = client.post("/v1/items", json={"images": [image]})
    assert first.status_code == again.status_code == 201
    assert first.json["items"][0]["created"] is True and again.json["items"][0]["created"] is False
    assert services.store.count_items() == {"pool": 1}
    listed = client.get("/v1/items?split=pool").json
    assert [row["id"] for row in listed["items"]] == [first.json["items"][0]["item_id"]]
    assert client.get(f"/v1/items/{first.json['items'][0]['item_id']}").json["split"] == "pool"
    assert_problem(client.get("/v1/items/missing"), 404)
    assert_problem(client.get("/v1/items?split=elsewhere"), 400)


def annotation_created(task_id: int, annotation_id: int, annotator: int) -> dict:
    """Label Studio's ANNOTATION_CREATED body for pool item p1 answered "blue" in juicer's project (id 1)."""
    result = [{"from_name": "label", "to_name": "image", "type": "choices", "value": {"choices": ["blue"]}}]
    return {
        "action": "ANNOTATION_CREATED",
        "project": {"id": 1},
        "task": {"id": task_id, "data": {"item_id": "p1", "image": "/data/local-files/?d=images/p1.png"}},
        "annotation": {"id": annotation_id, "completed_by": annotator, "result": result, "was_cancelled": False,
                       "created_at": "2026-11-28T21:00:00Z", "updated_at": "2026-11-28T21:00:00Z"},
    }


def test_webhook_checks_the_secret_records_fast_and_the_job_applies_the_label(client, services):
    from app.worker.scheduler import process_webhook_events

    services.store.add_items([NewItem("p1", "h1", "pool/1", "pool", "images/p1.png")])
    delivered_as_task(services.store, "p1", 9)  # juicer delivered p1 as Label Studio task 9
    payload = annotation_created(task_id=9, annotation_id=41, annotator=1)
    no_secret = client.post("/v1/webhooks/label-studio", json=payload, headers={"Authorization": ""})
    assert_problem(no_secret, 401)
    response = client.post("/v1/webhooks/label-studio", json=payload, headers={"X-Juicer-Secret": "hook-secret-123", "Authorization": ""})
    assert response.status_code == 200
    assert services.store.current_labels() == []  # recorded only; the job applies it
    services.desk.hold(payload)  # the annotator's real answer: the job reads it back from Label Studio
    assert process_webhook_events(services) == 1
    assert [(row.item_id, row.label) for row in services.store.current_labels()] == [("p1", "blue")]


def test_an_answer_on_a_task_juicer_did_not_deliver_labels_nothing_whatever_its_data_says(client, services):
    """A member imports a task naming a pool item into juicer's project and answers it: the webhook and the pull
    both find no task juicer delivered, so the item stays unlabelled."""
    from app.worker.scheduler import process_webhook_events, pull_labels

    services.store.add_items([NewItem("p1", "h1", "pool/1", "pool", "images/p1.png")])
    payload = annotation_created(task_id=77, annotation_id=42, annotator=5)
    services.desk.hold(payload)  # Label Studio really holds it: the task and its answer exist
    response = client.post("/v1/webhooks/label-studio", json=payload, headers={"X-Juicer-Secret": "hook-secret-123", "Authorization": ""})
    assert response.status_code == 200
    assert process_webhook_events(services) == 0
    services.desk.events.append(LabelEvent("p1", 77, 42, "blue", "5", utcnow(), "set"))
    assert pull_labels(services) == 0
    assert services.store.current_labels() == []


def test_models_report_and_readiness(client, trained):
    models = client.get("/v1/models").json
    assert models["current"] == "v0001" and models["models"][0]["serving"] is True
    assert client.get("/v1/models/current").json["model_version"] == "v0001"
    report = client.get("/v1/report").json
    assert [point["model_version"] for point in report["points"]] == ["v0001"]
    assert report["points"][0]["n_labels"] == 6
    assert client.get("/report.png").data[:8] == b"\x89PNG\r\n\x1a\n"
    assert b"v0001" in client.get("/report").data
    assert client.get("/readyz").status_code == 200
    metrics = client.get("/metrics").get_data(as_text=True)
    assert "juicer_model_info" in metrics and 'model_version="v0001"' in metrics
    trained.desk.down = True  # predictions do not need Label Studio: ready, reported degraded
    body = client.get("/readyz").json
    assert body["status"] == "degraded" and body["checks"] == {"model": True, "store": True, "label_studio": False}
    trained.models._current = None  # no model: not ready
    body = assert_problem(client.get("/readyz"), 503)
    assert body["checks"]["model"] is False


def test_retrain_without_a_scheduler_is_refused_and_jobs_can_be_polled(client, trained):
    from app.worker.scheduler import run_retrain_request

    assert_problem(client.post("/v1/retrain"), 503)
    unchanged = trained.store.create_job("retrain")
    run_retrain_request(trained, unchanged)  # no label changed since v0001: no duplicate version
    job = client.get(f"/v1/jobs/{unchanged}").json
    assert job["status"] == "done" and job["result"]["version"] is None and "no new labels" in job["result"]["skipped"]
    forced = trained.store.create_job("retrain")
    run_retrain_request(trained, forced, force=True)
    job = client.get(f"/v1/jobs/{forced}").json
    assert job["status"] == "done" and job["result"]["version"] == "v0002"
    assert_problem(client.get("/v1/jobs/999"), 404)


@pytest.mark.parametrize("query, body", [("?force=maybe", None), ("", "[1, 2]")])
def test_a_bad_force_flag_is_a_problem(client, trained, query, body):
    class RunningScheduler:
        running = True

        def wake(self, job_id):
            raise AssertionError("a bad request must not queue a job")

    trained.scheduler = RunningScheduler()
    response = client.post(f"/v1/retrain{query}", data=body, content_type="application/json")
    assert_problem(response, 400)
    assert trained.store.queued_jobs(["retrain", "retrain-force"]) == []


def test_health_needs_no_token(client):
    assert client.get("/healthz", headers={"Authorization": ""}).status_code == 200


def test_a_truncated_pool_image_is_refused_before_anything_is_stored(client, services):
    good = png(COLOURS["red"], seed=4)
    response = client.post("/v1/items", json={"images": [b64(good), b64(good[: len(good) - 20])]})
    assert_problem(response, 422)
    assert services.store.count_items() == {}
    assert not services.settings.images_dir.exists() or not any(services.settings.images_dir.iterdir())
