"""Classes that grow: /v1/classes, the store's list every process reads, Label Studio's project following it, the
head's new row at the next retrain, and a class nobody used yet renamed or retired (any other refused with a 409)."""

from __future__ import annotations

import base64

import numpy as np
import pytest

from app.core.training import default_head_factory
from app.store import NewLabel, Store
from app.worker.scheduler import deliver_outbox
from tests.support.images import add_png_item, png
from tests.unit.app.conftest import CLASSES, COLOURS

PURPLE = (150, 30, 200)


def _image_label(colour, label, seed):
    return {"image": base64.b64encode(png(colour, seed=seed)).decode(), "label": label}


def test_get_lists_the_classes(client):
    response = client.get("/v1/classes")
    assert response.status_code == 200
    assert response.json == {"classes": list(CLASSES), "added_at_run_time": []}


def test_post_adds_a_class_to_the_store_and_label_studio_once(client, services):
    response = client.post("/v1/classes", json={"name": " purple "})
    assert response.status_code == 201, response.json
    assert response.json["classes"] == [*CLASSES, "purple"] and response.json["added"] == ["purple"]
    assert response.json["added_at_run_time"] == ["purple"]
    assert response.json["label_studio"] == {"project_id": 1, "updated": True, "detail": None}
    assert services.desk.ensured[-1] == [*CLASSES, "purple"]
    assert services.store.stored_classes() == (*CLASSES, "purple") and services.classes == (*CLASSES, "purple")
    assert services.project.classes == (*CLASSES, "purple")
    again = client.post("/v1/classes", json={"name": "purple"})
    assert again.status_code == 200 and again.json["added"] == [] and again.json["classes"] == [*CLASSES, "purple"]


@pytest.mark.parametrize("name", ["   ", "", "tab\there", "nul\x00"])
def test_an_empty_name_is_a_problem(client, services, name):
    response = client.post("/v1/classes", json={"name": name})
    assert response.status_code in (400, 422) and response.mimetype == "application/problem+json"
    assert services.store.stored_classes() == CLASSES


def test_a_label_of_an_unknown_class_is_a_422_naming_it_and_how_to_add_it(client):
    response = client.post("/v1/labels", json={"labels": [_image_label(PURPLE, "purple", 1)]})
    assert response.status_code == 422 and response.json["type"].endswith("unknown-label")
    detail = response.json["detail"]
    assert "'purple'" in detail and "POST /v1/classes" in detail and "juicer classes add" in detail
    assert client.post("/v1/classes", json={"name": "purple"}).status_code == 201
    assert client.post("/v1/labels", json={"labels": [_image_label(PURPLE, "purple", 1)]}).status_code == 201


def test_a_class_added_by_another_process_is_seen_at_once(client, services, tmp_path):
    other = Store.open(tmp_path)  # another gunicorn worker, or `juicer classes add`, on the same store
    try:
        other.add_classes(["purple"])
    finally:
        other.close()
    assert client.get("/v1/classes").json["classes"] == [*CLASSES, "purple"]
    assert services.trainer.classes == (*CLASSES, "purple")
    assert client.post("/v1/labels", json={"labels": [_image_label(PURPLE, "purple", 1)]}).status_code == 201


def test_label_studio_away_keeps_the_class_and_the_delivery_job_adds_it_later(client, services):
    services.desk.down = True
    response = client.post("/v1/classes", json={"name": "purple"})
    assert response.status_code == 201
    assert response.json["label_studio"]["updated"] is False and "gets it once it answers" in response.json["label_studio"]["detail"]
    assert services.classes == (*CLASSES, "purple") and services.project.classes == CLASSES
    services.desk.down = False
    deliver_outbox(services)
    assert services.project.classes == (*CLASSES, "purple") and services.desk.ensured[-1] == [*CLASSES, "purple"]


def _warm_softmax(previous):
    from learner.head import SoftmaxHead

    return default_head_factory(previous) if previous is not None else SoftmaxHead(random_state=0, warm_start=True, max_iter=200)


def test_the_next_retrain_gives_the_head_a_row_for_the_added_class_and_the_report_shows_it(client, services):
    services.trainer.head_factory = _warm_softmax
    entries = [_image_label(COLOURS[name], name, 10 * k + i) for k, name in enumerate(CLASSES) for i in range(2)]
    assert client.post("/v1/labels", json={"labels": entries[:4]}).status_code == 201
    assert client.post("/v1/labels", json={"labels": entries[4:]}).status_code == 201
    first = services.trainer.retrain(reason="test")
    assert list(services.models.current.head.classes_) == sorted(CLASSES)
    known_rows = services.models.current.head.coef_.copy()
    new_labels = []
    for k, name in enumerate([*CLASSES, "purple"]):
        for i in range(3):
            item_id = f"holdout-{name}-{i}"
            add_png_item(services.store, services.data_dir, item_id, png({**COLOURS, "purple": PURPLE}[name], seed=500 + 10 * k + i),
                         "holdout", source=item_id)  # fmt: skip
            new_labels.append(NewLabel(item_id, name, "dataset"))
    assert client.post("/v1/classes", json={"name": "purple"}).status_code == 201
    services.store.add_labels(new_labels)
    entries = [_image_label(PURPLE, "purple", 100 + i) for i in range(3)]
    assert client.post("/v1/labels", json={"labels": entries}).status_code == 201

    result = services.trainer.retrain(reason="test")
    assert result.version != first.version and result.labels_per_class["purple"] == 3
    model = services.models.current
    assert model.classes == (*CLASSES, "purple")
    assert list(model.head.classes_) == sorted([*CLASSES, "purple"])
    assert model.head.coef_.shape == (known_rows.shape[0] + 1, known_rows.shape[1])  # one more row: the new class
    assert services.store.latest_model().classes == [*CLASSES, "purple"]
    proba = model.proba(np.ones((1, 192), dtype=np.float32))
    assert proba.shape == (1, 4)
    metrics = services.store.latest_model().metrics
    assert "purple" in metrics["per_class_accuracy"]
    page = client.get("/report")
    assert page.status_code == 200 and "purple" in page.get_data(as_text=True)


def test_a_class_nobody_used_can_be_renamed_or_retired(client, services):
    assert client.post("/v1/classes", json={"name": "purpel"}).status_code == 201
    renamed = client.patch("/v1/classes/purpel", json={"name": "purple"})
    assert renamed.status_code == 200, renamed.json
    assert renamed.json["classes"] == [*CLASSES, "purple"] and renamed.json["added_at_run_time"] == ["purple"]
    assert services.desk.ensured[-1] == [*CLASSES, "purple"]
    retired = client.delete("/v1/classes/purple")
    assert retired.status_code == 200 and retired.json["classes"] == list(CLASSES)
    assert services.store.stored_classes() == CLASSES and services.desk.ensured[-1] == list(CLASSES)


def test_a_configured_class_or_one_with_labels_is_refused_with_what_to_do(client, services):
    refused = client.delete("/v1/classes/red")
    assert refused.status_code == 409 and refused.json["type"].endswith("class-in-use")
    assert "service.classes" in refused.json["detail"] and "relabel" in refused.json["detail"]
    assert client.post("/v1/classes", json={"name": "purple"}).status_code == 201
    assert client.post("/v1/labels", json={"labels": [_image_label(PURPLE, "purple", 1)]}).status_code == 201
    for response in (client.delete("/v1/classes/purple"), client.patch("/v1/classes/purple", json={"name": "violet"})):
        assert response.status_code == 409 and "1 label(s) name 'purple'" in response.json["detail"]
        assert "POST /v1/classes" in response.json["detail"]
    assert services.store.stored_classes() == (*CLASSES, "purple")
    assert client.delete("/v1/classes/nope").status_code == 404
    assert client.patch("/v1/classes/purple", json={"name": "red"}).status_code == 409


def test_label_studio_away_changes_nothing_on_a_retire(client, services):
    assert client.post("/v1/classes", json={"name": "purple"}).status_code == 201
    services.desk.down = True
    response = client.delete("/v1/classes/purple")
    assert response.status_code == 503 and "nothing changed" in response.json["detail"]
    assert services.store.stored_classes() == (*CLASSES, "purple")
