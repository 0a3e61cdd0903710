"""No event is believed on its word (issue 21, holes 2 and 3): forged, replayed and future-dated events on both
webhook doors write no label, an annotation from a project juicer does not serve never lands on a juicer item, and
an annotator's real answer still becomes a label."""

from __future__ import annotations

import itertools

import httpx
import pytest

from annotation.webhooks import SECRET_HEADER
from tests.integration.hostile.conftest import Hostile, event

pytestmark = [pytest.mark.integration, pytest.mark.hostile]

NOW = "2026-12-05T12:00:00Z"
FUTURE = "2099-01-01T00:00:00Z"
_never_issued = itertools.count(900_000_000)


def _listed_secret(hostile: Hostile) -> str:
    """The secret mallory reads in ``GET /api/webhooks``; the one on disk if Label Studio no longer shows it (the
    secret filters noise, it proves nothing: these tests hold that, with the secret in hand)."""
    with hostile.ls(hostile.mallory_token) as http:
        for hook in http.get("/api/webhooks").json():
            for name, value in (hook.get("headers") or {}).items():
                if name.lower() == SECRET_HEADER.lower():
                    return str(value)
    return hostile.secret_values()["webhook-secret"]


def _post_both_doors(hostile: Hostile, body: dict) -> list[int]:
    """POST ``body`` to juicer's own webhook (with the secret) and to the ML-backend webhook (no credentials)."""
    statuses = []
    with hostile.juicer(**{SECRET_HEADER: _listed_secret(hostile)}) as client:
        statuses.append(client.post("/v1/webhooks/label-studio", json=body).status_code)
    with hostile.juicer() as client:
        statuses.append(client.post("/label-studio-ml/webhook", json=body).status_code)
    return statuses


def test_a_made_up_annotation_with_the_secret_writes_no_label(hostile: Hostile) -> None:
    """An ANNOTATION_CREATED for an annotation id Label Studio never issued, on a real task of juicer's."""
    target = hostile.take_task()
    for action in ("ANNOTATION_CREATED", "ANNOTATION_UPDATED"):
        body = event(action, next(_never_issued), target.task_id, target.item_id, hostile.classes[0], NOW, hostile.project.id)
        _post_both_doors(hostile, body)
    hostile.answer_as_owner()  # the barrier: every event before it was judged
    assert hostile.label(target.item_id) is None


def test_a_2099_event_for_the_next_annotation_id_does_not_pin_the_item(hostile: Hostile) -> None:
    """Mallory learns the newest annotation id from one of her own, forges the next id dated 2099 on a juicer task;
    the annotator's genuine answer that then takes that id is the label."""
    target = hostile.take_task()
    _, tasks = hostile.new_project(hostile.mallory_token, "mallory's probe", n_images=1)
    with hostile.desk(hostile.mallory_token) as desk:
        newest = desk.submit_annotation(int(tasks[0]["id"]), hostile.classes[0])
    pinned = hostile.classes[2]
    # Only the next id: a forged future row for a later id would pin whichever answer takes it, in other tests too.
    _post_both_doors(hostile, event("ANNOTATION_CREATED", newest + 1, target.task_id, target.item_id, pinned, FUTURE))
    genuine = hostile.classes[3]
    with hostile.desk(hostile.owner_token) as desk:
        annotation_id = desk.submit_annotation(target.task_id, genuine, prediction_id=target.prediction_id)
    assert annotation_id == newest + 1, "another annotation came between: the forged id missed"
    hostile.wait_label(target.item_id, genuine)
    hostile.answer_as_owner()
    assert hostile.label(target.item_id) == genuine


def test_a_replayed_real_annotation_with_another_label_changes_nothing(hostile: Hostile) -> None:
    """A real annotation id and task (a member reads them in Label Studio), another label, dated later."""
    task, annotation_id = hostile.answer_as_owner(hostile.classes[4])
    for action in ("ANNOTATION_UPDATED", "ANNOTATION_CREATED"):
        body = event(action, annotation_id, task.task_id, task.item_id, hostile.classes[5], FUTURE, hostile.project.id)
        _post_both_doors(hostile, body)
    deleted = {"action": "ANNOTATIONS_DELETED", "annotations": [{"id": annotation_id}], "project": {"id": hostile.project.id}}
    _post_both_doors(hostile, deleted)  # a deletion Label Studio never made
    hostile.answer_as_owner()
    assert hostile.label(task.item_id) == hostile.classes[4]


def test_mallorys_own_project_annotation_labels_no_juicer_item(hostile: Hostile) -> None:
    """Hole 3: her real task and annotation in her own project, ``task.data.item_id`` set to a juicer pool item,
    on the ML-backend webhook without credentials (naming her project, then juicer's)."""
    target = hostile.take_task()
    label = "Sandal" if "Sandal" in hostile.classes else hostile.classes[-1]
    project_id, tasks = hostile.new_project(hostile.mallory_token, "mallory's shop", n_images=1)
    task_id = int(tasks[0]["id"])
    with hostile.desk(hostile.mallory_token) as desk:
        annotation_id = desk.submit_annotation(task_id, label)
    statuses = []
    with hostile.juicer() as client:
        for claimed_project in (project_id, hostile.project.id):
            body = event("ANNOTATION_CREATED", annotation_id, task_id, target.item_id, label, NOW, claimed_project)
            statuses.append(client.post("/label-studio-ml/webhook", json=body).status_code)
    hostile.answer_as_owner()
    assert hostile.label(target.item_id) is None, f"mallory's {label!r} labelled juicer's item (answers {statuses})"


def test_a_task_mallory_imports_into_juicers_project_labels_no_pool_item(hostile: Hostile) -> None:
    """Her own task in juicer's project, its data naming a pool item juicer never sent: her answer to it comes with
    Label Studio's real webhook (and secret) and still labels nothing juicer did not ask about."""
    target = hostile.take_task()
    label = "Sandal" if "Sandal" in hostile.classes else hostile.classes[-1]
    with hostile.ls(hostile.mallory_token) as http:
        imported = http.post(f"/api/projects/{hostile.project.id}/import", json=[{"data": {"image": target.image, "item_id": target.item_id}}])
        assert imported.status_code == 201, imported.text
        listed = http.get("/api/tasks/", params={"project": hostile.project.id, "page_size": 1000}).json()
    tasks = listed["tasks"] if isinstance(listed, dict) else listed
    task_ids = [t["id"] for t in tasks if (t.get("data") or {}).get("item_id") == target.item_id and t["id"] != target.task_id]
    assert task_ids, "mallory's task is not in juicer's project"
    with hostile.desk(hostile.mallory_token) as desk:
        desk.submit_annotation(int(task_ids[0]), label)
    hostile.answer_as_owner()
    assert hostile.label(target.item_id) is None, f"mallory's own task gave juicer's item {target.item_id} the label {label!r}"


def test_an_annotators_real_answer_becomes_a_label(hostile: Hostile) -> None:
    """The legitimate path: mallory is an annotator, and her answer to a task juicer sent counts."""
    task = hostile.take_task()
    with hostile.desk(hostile.mallory_token) as desk:
        desk.submit_annotation(task.task_id, hostile.classes[1], prediction_id=task.prediction_id)
    hostile.wait_label(task.item_id, hostile.classes[1])


def test_the_webhook_doors_refuse_a_missing_or_wrong_secret(hostile: Hostile) -> None:
    """What the secret still guards: juicer's own webhook records nothing without it."""
    body = event("ANNOTATION_CREATED", next(_never_issued), 1, "any", hostile.classes[0], NOW)
    with httpx.Client(base_url=hostile.service.url, timeout=30) as client:
        assert client.post("/v1/webhooks/label-studio", json=body).status_code == 401
        assert client.post("/v1/webhooks/label-studio", json=body, headers={SECRET_HEADER: "guess"}).status_code == 401
