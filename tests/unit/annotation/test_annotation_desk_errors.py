"""LabelStudioDesk's error mapping and request shapes, with httpx.MockTransport under the real SDK."""

from __future__ import annotations

import json
from xml.etree import ElementTree

import httpx
import pytest

from simulate.annotator import AnnotatorDesk
from annotation.desk import LabelStudioDesk
from annotation.errors import (
    AnnotationError,
    LabelStudioAuthError,
    LabelStudioRejected,
    LabelStudioUnavailable,
    ProjectConfigError,
)
from annotation.labelconfig import label_config
from annotation.models import Project, PullCursor, ReviewRequest, SeenAnnotation
from annotation.reviews import BLIND_SCORE
from annotation.labelconfig import CHOICES_NAME

URL = "http://ls.test"


def desk_answering(handler, **kwargs) -> AnnotatorDesk:
    """A desk (with the simulated annotator's moves) whose server is ``handler``."""
    return AnnotatorDesk(URL, "tok", transport=httpx.MockTransport(handler), **kwargs)


def answer(status: int, body) -> callable:
    return lambda request: httpx.Response(status, json=body)


@pytest.mark.parametrize(
    ("status", "kind", "retryable"),
    [(400, LabelStudioRejected, False), (401, LabelStudioAuthError, False), (403, LabelStudioAuthError, False),
     (404, LabelStudioRejected, False), (429, LabelStudioUnavailable, True), (500, LabelStudioUnavailable, True),
     (503, LabelStudioUnavailable, True)],
)  # fmt: skip
def test_http_errors_map_to_annotation_errors(status, kind, retryable):
    calls = []

    def handler(request):
        calls.append(request)
        return httpx.Response(status, json={"detail": "the reason Label Studio gave"})

    with desk_answering(handler) as desk, pytest.raises(kind) as caught:
        desk.ensure_project(["a", "b"], "some project")
    assert caught.value.retryable is retryable and caught.value.status == status
    assert "the reason Label Studio gave" in str(caught.value) and "headers" not in str(caught.value)
    assert caught.value.__cause__ is not None
    assert len(calls) == 1  # no hidden SDK retries with sleeps


@pytest.mark.parametrize("error", [httpx.ConnectError("refused"), httpx.ReadTimeout("slow")])
def test_transport_failures_are_retryable(error):
    def handler(request):
        raise error

    with desk_answering(handler) as desk, pytest.raises(LabelStudioUnavailable) as caught:
        desk.pull_labels(Project(1, "p", ("a",), URL))
    assert caught.value.retryable and caught.value.__cause__ is error
    assert isinstance(caught.value, AnnotationError)


def test_health_is_false_instead_of_raising():
    def handler(request):
        raise httpx.ConnectError("refused")

    with desk_answering(handler) as desk:
        assert desk.health() is False
    with desk_answering(answer(200, {"status": "UP"})) as desk:
        assert desk.health() is True


def test_next_task_is_none_when_the_queue_is_empty():
    with desk_answering(answer(404, {"detail": "There are still some tasks to complete for the user"})) as desk:
        assert desk.next_task(Project(1, "p", ("a",), URL)) is None


def test_submit_posts_the_editor_body():
    posted = []

    def handler(request):
        if request.method == "GET":
            return httpx.Response(200, json={"id": 7, "project": 3, "predictions": [{"id": 11}, {"id": 12}]})
        posted.append(request)
        return httpx.Response(201, json={"id": 99})

    with desk_answering(handler) as desk:
        assert desk.submit_annotation(7, "cat") == 99
    [request] = posted
    body = json.loads(request.content)
    assert request.url.path == "/api/tasks/7/annotations" and request.url.params["project"] == "3"
    assert request.headers["Authorization"] == "Token tok"
    assert set(body) == {"lead_time", "result", "draft_id", "parent_prediction", "parent_annotation", "started_at", "project", "unique_id"}
    assert body["parent_prediction"] == 12 and body["project"] == "3"
    [region] = body["result"]
    assert region["value"] == {"choices": ["cat"]} and (region["from_name"], region["to_name"]) == ("label", "image")
    assert len(region["id"]) == 10 and region["origin"] == "manual"


def test_rescoring_imports_in_bulk_and_pruning_keeps_every_version_an_open_editor_can_point_at():
    calls = []
    tasks = [{"id": n, "data": {"item_id": item}} for n, item in enumerate("abcd", start=1)]
    tasks.append({"id": 5, "data": {"item_id": "e"}, "total_annotations": 1})  # annotated: pins nothing
    tasks.append({"id": 6, "data": {"item_id": "f"}})  # open, not re-sent: its newest version stays
    cat = [{"from_name": "label", "to_name": "image", "type": "choices", "value": {"choices": ["cat"]}}]
    already = {"id": 8, "task": 4, "model_version": "v3", "score": 0.4, "result": cat}  # says what "d" would: no new one
    predictions = [
        {"id": 5, "task": 1, "model_version": "v1"}, {"id": 6, "task": 1, "model_version": "v2"},
        {"id": 7, "task": 2, "model_version": "v2"}, already,
        {"id": 9, "task": 5, "model_version": "v0"}, {"id": 10, "task": 6, "model_version": "v1"},
    ]  # fmt: skip  (task 3 has none)

    def handler(request):
        calls.append((request.method, request.url.path.rstrip("/"), json.loads(request.content) if request.content else None))
        if request.url.path == "/api/tasks/":
            return httpx.Response(200, json={"tasks": tasks, "total": len(tasks)})
        if request.method == "GET" and request.url.path.rstrip("/") == "/api/predictions":
            assert request.url.params["project"] == "4"
            return httpx.Response(200, json=predictions)
        if request.url.path.rstrip("/") == "/api/projects/4" and request.method == "GET":
            return httpx.Response(200, json={"id": 4, "model_version": "v2", "sampling": "Uncertainty sampling"})
        if request.method == "DELETE":
            return httpx.Response(200, json={"deleted_predictions": 1})
        return httpx.Response(201, json={"created": 3})

    requests = [ReviewRequest(i, f"http://img/{i}.jpg", "cat", 0.1 * n, "v3") for n, i in enumerate("abcd", start=1)]
    with desk_answering(handler) as desk:
        sent = desk.send_for_review(Project(4, "p", ("cat",), URL), requests)
    assert [(t.item_id, t.task_id, t.created) for t in sent] == [("a", 1, False), ("b", 2, False), ("c", 3, False), ("d", 4, False)]
    [created] = [body for method, path, body in calls if path.endswith("/import/predictions")]
    assert [(p["task"], p["model_version"]) for p in created] == [(1, "v3"), (2, "v3"), (3, "v3")]
    assert not any(method == "PATCH" and "/predictions/" in path for method, path, _ in calls)  # no call per task
    assert ("PATCH", "/api/projects/4") in [(m, p) for m, p, _ in calls]  # the project follows v3
    assert len(calls) == 5 and not any(m == "DELETE" for m, _, _ in calls)  # tasks, predictions, import, project x2
    calls.clear()
    with desk_answering(handler) as desk:
        pruned = desk.prune_predictions(Project(4, "p", ("cat",), URL))
    # The two newest versions of every open task stay (v1 + v2 of task 1, v1 of open task 6); annotated task 5's
    # v0 goes, in one call per version.
    assert pruned == ["v0"]
    assert [body for m, path, body in calls if m == "DELETE" and path == "/api/projects/4/model-versions"] == [{"model_version": "v0"}]


def test_submit_retries_once_when_its_prediction_vanished():
    posted = []

    def handler(request):
        if request.method == "GET":
            return httpx.Response(200, json={"id": 7, "project": 3, "predictions": [{"id": 20}]})
        posted.append(json.loads(request.content))
        if len(posted) == 1:
            errors = {"parent_prediction": ['Invalid pk "12" - object does not exist.']}
            return httpx.Response(400, json={"detail": "Validation error", "validation_errors": errors})
        return httpx.Response(201, json={"id": 99})

    with desk_answering(handler) as desk:
        assert desk.submit_annotation(7, "cat", prediction_id=12) == 99
    assert [p["parent_prediction"] for p in posted] == [12, 20]
    assert posted[0]["result"] == posted[1]["result"] and posted[0]["unique_id"] != posted[1]["unique_id"]


def test_submit_does_not_retry_a_server_error_while_its_prediction_exists():
    posted = []

    def handler(request):
        if request.method == "GET":
            return httpx.Response(200, json={"id": 7, "project": 3, "predictions": [{"id": 12}]})
        posted.append(request)
        return httpx.Response(500, json={"detail": "something else broke"})

    with desk_answering(handler) as desk, pytest.raises(LabelStudioUnavailable, match="something else broke"):
        desk.submit_annotation(7, "cat")
    assert len(posted) == 1


def test_predicted_label_outside_the_classes_is_refused_before_any_call():
    def handler(request):
        raise AssertionError("no request expected")

    with desk_answering(handler) as desk, pytest.raises(ProjectConfigError, match="dog"):
        desk.send_for_review(Project(1, "p", ("cat",), URL), [ReviewRequest("i", "x.jpg", "dog", 0.5, "v1")])


def test_image_paths_become_local_files_urls(tmp_path):
    desk = LabelStudioDesk(URL, "tok", files_root=tmp_path / "images")
    assert desk.image_url("sub dir/a.jpg") == "/data/local-files/?d=images/sub%20dir/a.jpg"
    assert desk.image_url("https://example.org/a.jpg") == "https://example.org/a.jpg"
    for bad in ("/etc/passwd", "../secret.jpg"):
        with pytest.raises(ValueError):
            desk.image_url(bad)
    with pytest.raises(ValueError, match="files_root"):
        LabelStudioDesk(URL, "tok").image_url("a.jpg")


def test_label_config_escapes_class_names():
    names = ["T-shirt/top", 'say "hi" & <bye>', "it's"]
    root = ElementTree.fromstring(label_config(names))
    assert [c.get("value") for c in root.iter("Choice")] == names
    assert root.find("Choices").get("toName") == root.find("Image").get("name")


def test_cursor_round_trips_through_json():
    cursor = PullCursor(4, {12: SeenAnnotation("item-1", 3, "cat", "1", "2026-11-28T21:16:54.645778Z")})
    assert PullCursor.from_json(cursor.to_json()) == cursor
    with pytest.raises(ValueError):
        PullCursor.from_json('{"seen": 1}')


def test_cursor_from_another_project_is_refused():
    with desk_answering(answer(500, {})) as desk, pytest.raises(ValueError, match="project"):
        desk.pull_labels(Project(1, "p", ("a",), URL), PullCursor(2))


def test_pulled_labels_name_the_annotator_whether_or_not_the_user_is_expanded():
    def choice(label):
        return [{"from_name": CHOICES_NAME, "to_name": "image", "type": "choices", "value": {"choices": [label]}}]

    export = [
        {"id": 10, "data": {"item_id": "a"}, "annotations": [
            {"id": 1, "completed_by": 5, "result": choice("x"), "updated_at": "2026-12-01T10:00:00Z"}]},
        {"id": 11, "data": {"item_id": "b"}, "annotations": [
            {"id": 2, "completed_by": {"id": 6, "email": "p@q.test"}, "result": choice("y"),
             "updated_at": "2026-12-01T10:00:01Z"}]},
    ]  # fmt: skip

    def handler(request):
        assert request.url.path == "/api/projects/1/export"
        return httpx.Response(200, json=export)

    with desk_answering(handler) as desk:
        events, _ = desk.pull_labels(Project(1, "p", ("x", "y"), URL))
    assert sorted((event.item_id, event.label, event.annotator) for event in events) == [("a", "x", "5"), ("b", "y", "6")]


def test_a_holdout_item_goes_blind_only_a_placeholder_on_import_and_nothing_when_sent_again():
    calls = []
    tasks = [{"id": 9, "data": {"item_id": "z"}}]  # a holdout task already in the project

    def handler(request):
        body = json.loads(request.content) if request.content else None
        calls.append((request.method, request.url.path.rstrip("/"), body))
        if request.url.path == "/api/tasks/":
            return httpx.Response(200, json={"tasks": tasks, "total": len(tasks)})
        if request.url.path.rstrip("/").endswith("/import") and request.method == "POST":
            tasks.extend({"id": 10 + n, "data": task["data"]} for n, task in enumerate(body))
            return httpx.Response(201, json={"task_count": len(body), "task_ids": [10 + n for n in range(len(body))]})
        if request.method == "GET" and request.url.path.rstrip("/") == "/api/predictions":
            return httpx.Response(200, json=[])
        return httpx.Response(200, json={"id": 4, "model_version": "v3"})

    requests = [
        ReviewRequest("h", "images/h.png", None, 0.0, "holdout", blind=True),
        ReviewRequest("a", "images/a.png", "cat", 0.4, "v3"),
        ReviewRequest("z", "images/z.png", None, 0.0, "holdout", blind=True),
    ]
    with desk_answering(handler, files_root="/srv/files") as desk:
        sent = desk.send_for_review(Project(4, "p", ("cat",), URL), requests)
    assert [t.item_id for t in sent] == ["h", "a", "z"]
    [imported] = [body for method, path, body in calls if method == "POST" and path.endswith("/import")]
    by_item = {task["data"]["item_id"]: task for task in imported}
    assert set(by_item) == {"h", "a"}
    # nothing to anchor on: an empty placeholder of the current version, scored below every guess (served first)
    assert by_item["h"]["predictions"] == [{"model_version": "v3", "score": BLIND_SCORE, "result": []}]
    assert by_item["h"]["data"]["kind"] == "holdout"
    assert by_item["a"]["predictions"][0]["model_version"] == "v3" and "kind" not in by_item["a"]["data"]
    assert not [body for method, path, body in calls if path.endswith("/import/predictions")]  # "z" gets none either


def test_a_new_version_gives_the_open_blind_tasks_its_placeholder_so_label_studio_still_serves_them_first():
    """Label Studio's uncertainty queue serves only tasks holding a prediction of the project's model version."""
    calls = []
    tasks = [
        {"id": 1, "data": {"item_id": "a"}},
        {"id": 2, "data": {"item_id": "z", "kind": "holdout"}},
        {"id": 3, "data": {"item_id": "s", "kind": "second-look"}},
        {"id": 4, "data": {"item_id": "y", "kind": "holdout"}, "total_annotations": 1},  # answered: left alone
    ]

    def handler(request):
        body = json.loads(request.content) if request.content else None
        calls.append((request.method, request.url.path.rstrip("/"), body))
        if request.url.path == "/api/tasks/":
            return httpx.Response(200, json={"tasks": tasks, "total": len(tasks)})
        if request.method == "GET" and request.url.path.rstrip("/") == "/api/predictions":
            return httpx.Response(200, json=[{"id": 1, "task": 1, "model_version": "v2", "score": 0.5, "result": []}])
        if request.method == "GET":
            return httpx.Response(200, json={"id": 4, "model_version": project_version[0], "sampling": "Uncertainty sampling"})
        return httpx.Response(201, json={"created": 1})

    project_version = ["v2"]

    with desk_answering(handler) as desk:
        desk.send_for_review(Project(4, "p", ("cat",), URL), [ReviewRequest("a", "images/a.png", "cat", 0.4, "v3")])
    imports = [body for method, path, body in calls if path.endswith("/import/predictions")]
    assert [[(p["task"], p["model_version"]) for p in body] for body in imports] == [[(1, "v3")], [(2, "v3"), (3, "v3")]]
    assert all(p["result"] == [] and p["score"] == BLIND_SCORE for p in imports[1])
    calls.clear()
    project_version[0] = "v3"  # the project is at v3 now: its blind tasks have their placeholders
    with desk_answering(handler) as desk:
        desk.send_for_review(Project(4, "p", ("cat",), URL), [ReviewRequest("a", "images/a.png", "cat", 0.5, "v3")])
    imports = [body for method, path, body in calls if path.endswith("/import/predictions")]
    assert [[p["task"] for p in body] for body in imports] == [[1]]  # the new guess only, no placeholder again


def test_holdout_tasks_in_a_project_juicer_did_not_create_are_blind_under_its_image_key_and_linked_by_the_import():
    calls = []

    def handler(request):
        body = json.loads(request.content) if request.content else None
        calls.append((request.method, request.url.path.rstrip("/"), dict(request.url.params), body))
        if "storages/localfiles" in request.url.path:
            return httpx.Response(200, json=[] if request.method == "GET" else {"id": 1, "path": "/srv/files"})
        if request.url.path.rstrip("/") == "/api/projects/7/import":
            return httpx.Response(201, json={"task_count": len(body), "task_ids": [40 + n for n in range(len(body))]})
        return httpx.Response(404, json={"detail": "not here"})

    requests = [ReviewRequest("h1", "images/h1.png", None, 0.0, "holdout", blind=True),
                ReviewRequest("h2", "images/h2.png", None, 0.0, "holdout", blind=True)]  # fmt: skip
    with desk_answering(handler, files_root="/srv/files") as desk:
        sent = desk.send_blind_elsewhere(7, "img", requests)
    assert [(t.item_id, t.task_id, t.created) for t in sent] == [("h1", 40, True), ("h2", 41, True)]
    [(_, _, params, imported)] = [call for call in calls if call[1] == "/api/projects/7/import"]
    assert params == {"return_task_ids": "true"}
    assert [task["data"]["item_id"] for task in imported] == ["h1", "h2"]
    assert all(set(task) == {"data"} for task in imported)  # no prediction: nothing to anchor on
    assert imported[0]["data"]["img"] == "/data/local-files/?d=files/images/h1.png" and imported[0]["data"]["kind"] == "holdout"
    assert not [call for call in calls if call[1] == "/api/tasks"]  # never linked by what task data says


def test_holdout_tasks_without_access_to_the_project_raise_what_label_studio_said():
    def handler(request):
        if "storages/localfiles" in request.url.path:
            return httpx.Response(403, json={"detail": "You do not have permission to perform this action."})
        return httpx.Response(500)

    with desk_answering(handler, files_root="/srv/files") as desk, pytest.raises(LabelStudioAuthError) as caught:
        desk.send_blind_elsewhere(7, "img", [ReviewRequest("h1", "images/h1.png", None, 0.0, "holdout", blind=True)])
    assert "permission" in str(caught.value) and "project 7" in str(caught.value)
