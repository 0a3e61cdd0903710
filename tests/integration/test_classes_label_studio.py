"""Classes that grow, against the real Label Studio: ``POST /v1/classes`` puts the choice in the project's labelling
config (an earlier annotation untouched), and an annotation choosing the new class becomes a label in the store."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from annotation.labelconfig import parse_label_config
from app.core.training import COLD_START_VERSION
from app.store import NewItem, NewPrediction, Store
from app.store.schema import review_tasks

pytestmark = pytest.mark.integration

TOKEN = "classes-test-token"


@pytest.fixture
def juicer(label_studio, tmp_path):
    """A juicer app with the real desk on the session's Label Studio, connected to its own project (no backbone:
    adding classes, delivering tasks and taking labels in never embed an image)."""
    from app import create_app
    from app.core.serving import ModelHolder
    from app.services import Services, resolve_classes
    from app.worker.scheduler import connect_label_studio
    from config import load_settings

    settings = load_settings(
        environ={}, data_dir=tmp_path,
        service={"classes": ["cat", "cup"], "api_token": TOKEN},
        label_studio={"url": label_studio.url, "token": label_studio.token, "project_title": label_studio.project_title("grow")},
    )  # fmt: skip
    store = Store.open(tmp_path)
    classes = resolve_classes(settings, store)
    desk = label_studio.desk()
    services = Services(settings, store, classes, None, ModelHolder(), None, desk=desk)  # type: ignore[arg-type]
    assert connect_label_studio(services)
    client = create_app(services=services).test_client()
    client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {TOKEN}"
    try:
        yield services, client
    finally:
        desk.close()
        store.close()


def _deliver(services, item_id: str, image: str) -> int:
    """Queue ``image`` (a file under Label Studio's document root) for annotators and deliver it; its task id."""
    from app.worker.scheduler import deliver_outbox

    services.store.add_items([NewItem(item_id, f"hash-{item_id}", f"pool/{item_id}", "pool", f"images/{image}")])
    services.store.queue_reviews([NewPrediction(item_id=item_id, model_version=COLD_START_VERSION, label="", score=0.0,
                                                probabilities={}, decision="review", rule="query:test", reason="test")])  # fmt: skip
    assert deliver_outbox(services) == 1
    with services.store.engine.connect() as conn:
        return conn.execute(sa.select(review_tasks.c.ls_task_id).where(review_tasks.c.item_id == item_id)).scalar_one()


def test_an_added_class_reaches_the_labelling_config_and_its_annotations_become_labels(label_studio, juicer):
    from app.worker.scheduler import pull_labels

    services, client = juicer
    desk, project = services.desk, services.project
    before = desk.submit_annotation(_deliver(services, "item-coffee", label_studio.images["coffee"]), "cup")

    response = client.post("/v1/classes", json={"name": "astronaut"})
    assert response.status_code == 201, response.json
    assert response.json["label_studio"] == {"project_id": project.id, "updated": True, "detail": None}
    config = parse_label_config(desk.client.sdk.projects.get(id=project.id, request_options=desk.client.opts).label_config)
    assert config.choices == ("cat", "cup", "astronaut")
    assert desk.get_annotation(before).label == "cup"  # the earlier annotation is untouched

    task_id = _deliver(services, "item-astronaut", label_studio.images["astronaut"])
    desk.submit_annotation(task_id, "astronaut")
    assert pull_labels(services) == 2
    labels = {row.item_id: row.label for row in services.store.current_labels()}
    assert labels == {"item-coffee": "cup", "item-astronaut": "astronaut"}

    refused = client.delete("/v1/classes/astronaut")  # it has a label now: 409 with what to do
    assert refused.status_code == 409 and "relabel" in refused.json["detail"]
    config = parse_label_config(desk.client.sdk.projects.get(id=project.id, request_options=desk.client.opts).label_config)
    assert config.choices == ("cat", "cup", "astronaut")


def test_a_class_nobody_used_is_retired_from_the_labelling_config(label_studio, juicer):
    services, client = juicer
    desk, project = services.desk, services.project
    assert client.post("/v1/classes", json={"name": "astronuat"}).status_code == 201
    renamed = client.patch("/v1/classes/astronuat", json={"name": "astronaut"})
    assert renamed.status_code == 200 and renamed.json["classes"] == ["cat", "cup", "astronaut"]
    config = parse_label_config(desk.client.sdk.projects.get(id=project.id, request_options=desk.client.opts).label_config)
    assert config.choices == ("cat", "cup", "astronaut")
    assert client.delete("/v1/classes/astronaut").status_code == 200
    config = parse_label_config(desk.client.sdk.projects.get(id=project.id, request_options=desk.client.opts).label_config)
    assert config.choices == ("cat", "cup") and services.store.stored_classes() == ("cat", "cup")
