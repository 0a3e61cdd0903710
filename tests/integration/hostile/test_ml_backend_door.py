"""The ML-backend door (issue 21, hole 5): a task image that walks out of Label Studio's media paths is not
fetched with Label Studio's token; and the door's legitimate work still happens: "Retrieve predictions" predicts,
an annotation in a project juicer serves becomes a label, "Start training" queues a retrain (201)."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import pytest

from annotation.labelconfig import label_config
from tests.integration.hostile.conftest import Hostile, walk_files

pytestmark = [pytest.mark.integration, pytest.mark.hostile]

WALKS_OUT = [
    "/data/upload/../../api/current-user/whoami",
    "/data/upload/%2e%2e/%2e%2e/api/current-user/whoami",
    "/data/upload/%2E%2E%2F%2E%2E%2Fapi/current-user/whoami",
    "/data/upload/..%2f..%2fapi/current-user/whoami",
    "/data/upload/%252e%252e/%252e%252e/api/current-user/whoami",
    "/data/upload/..\\..\\api\\current-user\\whoami",
    "/data/local-files/../../api/current-user/whoami",
    "/data/upload/./../../api/current-user/whoami",
]


def _label_studio_log(hostile: Hostile) -> Path:
    logs = [path for path in walk_files(hostile.root) if path.name == "label-studio.log"]
    assert logs, "no label-studio.log under the test folder"
    return logs[0]


def _basic(hostile: Hostile) -> httpx.Auth:
    return httpx.BasicAuth("label-studio", hostile.service.token)


def test_a_task_image_walking_out_of_the_media_paths_is_not_fetched(hostile: Hostile) -> None:
    """Each spelling of ``/data/upload/../../api/current-user/whoami`` (and the absolute URL on Label Studio) in a
    task of mallory's project: Label Studio never sees juicer ask for its API; a real image beside them predicts."""
    project_id, tasks = hostile.new_project(hostile.mallory_token, "mallory's planted tasks", n_images=1)
    walks = [*WALKS_OUT, f"{hostile.ls_url}/data/upload/../../api/current-user/whoami"]
    planted = [{"id": 10_000 + index, "data": {"image": url}} for index, url in enumerate(walks)]
    genuine = {"id": int(tasks[0]["id"]), "data": {"image": tasks[0]["data"]["image"]}}
    log = _label_studio_log(hostile)
    offset = log.stat().st_size
    body = {"project": f"{project_id}.0", "label_config": label_config(hostile.classes), "tasks": [*planted, genuine]}
    with httpx.Client(base_url=hostile.service.url, auth=_basic(hostile), timeout=120) as client:
        answer = client.post("/label-studio-ml/predict", json=body)
    assert answer.status_code == 200, answer.text[:500]
    results = answer.json()["results"]
    with log.open("rb") as text:
        text.seek(offset)
        asked = re.findall(rb'"GET (/api/current-user[^ ]*) HTTP', text.read())
    assert not asked, f"juicer asked Label Studio's API with its token: {sorted(set(asked))}"
    assert all(result == [] for result in results[: len(planted)]), "a planted task got a prediction"
    assert results[-1] and results[-1]["result"][0]["value"]["choices"][0] in hostile.classes  # the legitimate task predicts


def test_a_project_juicer_serves_predicts_labels_and_trains(hostile: Hostile) -> None:
    """The owner's own project connected to juicer as Label Studio does it: "Retrieve predictions", an annotation
    (its event comes through the unauthenticated /webhook) becomes a label on the served item, "Start training"."""
    project_id, tasks = hostile.new_project(hostile.owner_token, "owner's shop", n_images=2)
    url = f"{hostile.service.url}/label-studio-ml"
    basic = {"basic_auth_user": "label-studio", "basic_auth_pass": hostile.service.token, "auth_method": "BASIC_AUTH"}
    with hostile.ls(hostile.owner_token) as http:
        connected = http.post("/api/ml", json={"url": url, "project": project_id, "title": "juicer", **basic})
        assert connected.status_code == 201, connected.text
        retrieved = http.post(
            "/api/dm/actions", params={"id": "retrieve_tasks_predictions", "project": project_id},
            json={"selectedItems": {"all": True, "excluded": []}}, timeout=200,
        )  # fmt: skip
        assert retrieved.status_code == 200, retrieved.text
        predictions = http.get("/api/predictions/", params={"project": project_id}).json()
        assert {int(p["task"]) for p in predictions} == {int(t["id"]) for t in tasks}
        label = hostile.classes[6]
        with hostile.desk(hostile.owner_token) as desk:
            desk.submit_annotation(int(tasks[0]["id"]), label)
        with hostile.service.client() as client:
            served = [row["id"] for row in client.get("/v1/items", params={"split": "served", "limit": 100}).json()["items"]]
        hostile.service.wait_for(lambda: label in {hostile.label(item_id) for item_id in served}, 90,
                                 "the served task's annotation as a label")  # fmt: skip
        trained = http.post(f"/api/ml/{connected.json()['id']}/train", json={})
        assert trained.status_code == 200, trained.text
    with httpx.Client(base_url=hostile.service.url, auth=_basic(hostile), timeout=30) as client:
        assert client.post("/label-studio-ml/webhook", json={"action": "START_TRAINING", "project": str(project_id)}).status_code == 201
    with hostile.juicer() as anonymous:
        assert anonymous.post("/label-studio-ml/webhook", json={"action": "START_TRAINING"}).status_code == 401
