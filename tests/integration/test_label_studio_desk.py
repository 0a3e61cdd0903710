"""annotation/ against a real Label Studio server (the session's ``label_studio`` fixture)."""

from __future__ import annotations

import logging
import socket
import stat
import time

import httpx
import pytest

from annotation.desk import LabelStudioDesk
from annotation.errors import AnnotationError, LabelStudioUnavailable, ProjectConfigError
from annotation.models import PullCursor, ReviewRequest
from annotation.webhooks import check_secret, parse_webhook

pytestmark = pytest.mark.integration

CLASSES = ["cat", "cup", "person"]


def _requests(images: dict[str, str], scores: dict[str, float], labels: dict[str, str], version: str = "v1"):
    return [ReviewRequest(f"item-{name}", images[name], labels[name], scores[name], version) for name in scores]


def test_ensure_project_is_idempotent_and_adds_new_classes(label_studio):
    title = label_studio.project_title("bootstrap")
    with label_studio.desk() as desk:
        first = desk.ensure_project(CLASSES[:2], title)
        again = desk.ensure_project(CLASSES[:2], title)
        grown = desk.ensure_project(CLASSES, title)
        assert desk.health()
    assert again == first
    assert first.classes == ("cat", "cup")
    assert grown.id == first.id and grown.classes == ("cat", "cup", "person")
    assert grown.url.startswith(label_studio.url)


def test_removing_a_class_that_has_labels_is_refused(label_studio):
    title = label_studio.project_title("shrink")
    with label_studio.desk() as desk:
        project = desk.ensure_project(CLASSES, title)
        [task] = desk.send_for_review(project, [ReviewRequest("item-1", label_studio.images["coffee"], "cat", 0.4, "v1")])
        desk.submit_annotation(task.task_id, "cup")
        shrunk = desk.ensure_project(["cat", "cup"], title)  # "person" has no labels: removed
        with pytest.raises(ProjectConfigError, match="cup"):
            desk.ensure_project(["cat", "person"], title)  # drops "cup", which has a label
        with pytest.raises(ProjectConfigError, match="at least two"):
            desk.ensure_project(["cat"], title)
    assert shrunk.classes == ("cat", "cup")


def test_tasks_carry_the_prediction_and_resending_updates_it(label_studio):
    images = label_studio.images
    with label_studio.desk() as desk:
        project = desk.ensure_project(CLASSES, label_studio.project_title("predictions"))
        sent = desk.send_for_review(project, [ReviewRequest("only-item", images["chelsea"], "cup", 0.35, "v1")])
        resent = desk.send_for_review(project, [ReviewRequest("only-item", images["chelsea"], "cat", 0.55, "v2")])
        task = desk.next_task(project)
        image = httpx.get(label_studio.url + task.image, headers={"Authorization": f"Token {label_studio.token}"})
    assert sent[0].created and not resent[0].created
    assert resent[0].task_id == sent[0].task_id  # one item, one task
    assert (task.item_id, task.predicted_label, task.model_version) == ("only-item", "cat", "v2")
    assert task.score == pytest.approx(0.55)
    assert image.status_code == 200 and image.content[:3] == b"\xff\xd8\xff"  # the real JPEG, served by LS


def test_next_serves_the_lowest_score_first(label_studio):
    scores = {"chelsea": 0.91, "coffee": 0.22, "astronaut": 0.57}
    labels = {"chelsea": "cat", "coffee": "cup", "astronaut": "person"}
    with label_studio.desk() as desk:
        project = desk.ensure_project(CLASSES, label_studio.project_title("queue"))
        desk.send_for_review(project, _requests(label_studio.images, scores, labels))
        served = []
        while (task := desk.next_task(project)) is not None:
            served.append(task.item_id)
            desk.submit_annotation(task.task_id, labels[task.item_id.removeprefix("item-")])
    assert served == ["item-coffee", "item-astronaut", "item-chelsea"]


def _get(label_studio, path: str) -> dict:
    response = httpx.get(label_studio.url + path, headers={"Authorization": f"Token {label_studio.token}"}, timeout=10)
    response.raise_for_status()
    return response.json()


def _predictions(label_studio, task_id: int) -> list[dict]:
    """All predictions of a task (the raw task read, not the desk)."""
    return sorted(_get(label_studio, f"/api/tasks/{task_id}")["predictions"], key=lambda p: p["id"])


def test_resending_while_a_person_has_the_task_open_keeps_their_annotation(label_studio):
    """The race: a person opens a task, the service re-sends it with a new model, then the person submits."""
    images = label_studio.images
    with label_studio.desk() as desk:
        project = desk.ensure_project(CLASSES, label_studio.project_title("resend race"))
        first = [ReviewRequest("a", images["coffee"], "cup", 0.2, "v1"), ReviewRequest("b", images["chelsea"], "cat", 0.7, "v1")]
        again = [ReviewRequest("a", images["coffee"], "cat", 0.9, "v2"), ReviewRequest("b", images["chelsea"], "cup", 0.1, "v2")]
        desk.send_for_review(project, first)
        opened = desk.next_task(project)  # "a": the person's editor now holds prediction opened.prediction_id
        desk.send_for_review(project, again)
        annotation_id = desk.submit_annotation(opened.task_id, "cup", prediction_id=opened.prediction_id)
        served = desk.next_task(project)
        events, _ = desk.pull_labels(project)
        third = [ReviewRequest("b", images["chelsea"], "cat", 0.3, "v3")]
        desk.send_for_review(project, third)  # the next retrain: v1 is no editor's starting point any more
        pruned = desk.prune_predictions(project)
    assert (opened.item_id, opened.model_version) == ("a", "v1")
    assert _get(label_studio, f"/api/annotations/{annotation_id}")["task"] == opened.task_id  # accepted as submitted
    assert [(e.item_id, e.label, e.action) for e in events] == [("a", "cup", "set")]
    assert (served.item_id, served.predicted_label, served.model_version) == ("b", "cup", "v2")  # v2's scores order
    kept = _predictions(label_studio, served.task_id)
    assert pruned == ["v1"] and [p["model_version"] for p in kept] == ["v2", "v3"]  # v2 kept: an editor may hold it


def test_an_annotation_whose_prediction_vanished_is_still_saved(label_studio, caplog):
    """Even if the prediction a person started from is deleted (by hand, by an older juicer), their answer is kept."""
    auth = {"Authorization": f"Token {label_studio.token}"}
    with label_studio.desk() as desk:
        project = desk.ensure_project(CLASSES, label_studio.project_title("vanished"))
        [task] = desk.send_for_review(project, [ReviewRequest("gone", label_studio.images["astronaut"], "cat", 0.3, "v1")])
        opened = desk.next_task(project)
        httpx.delete(f"{label_studio.url}/api/predictions/{opened.prediction_id}", headers=auth, timeout=10).raise_for_status()
        desk.send_for_review(project, [ReviewRequest("gone", label_studio.images["astronaut"], "person", 0.4, "v2")])
        with caplog.at_level(logging.WARNING, logger="simulate.annotator"):
            annotation_id = desk.submit_annotation(task.task_id, "person", prediction_id=opened.prediction_id)
        events, _ = desk.pull_labels(project)
    assert any("vanished" in r.getMessage() for r in caplog.records)  # Label Studio did refuse the stale parent
    [current] = _predictions(label_studio, task.task_id)  # the task had none left: the re-send created one
    assert current["id"] != opened.prediction_id and current["model_version"] == "v2"
    assert _get(label_studio, f"/api/annotations/{annotation_id}")["parent_prediction"] == current["id"]
    assert [(e.item_id, e.label) for e in events] == [("gone", "person")]


def test_rescoring_prunes_older_versions_one_retrain_later(label_studio):
    """A task holding several predictions (an older juicer, an import by hand) ends with its two newest versions."""
    with label_studio.desk() as desk:
        project = desk.ensure_project(CLASSES, label_studio.project_title("duplicates"))
        [task] = desk.send_for_review(project, [ReviewRequest("dup", label_studio.images["coffee"], "cat", 0.5, "v1")])
        duplicate = {"task": task.task_id, "model_version": "v1", "score": 0.1, "result": []}
        desk.client.sdk.projects.import_predictions(id=project.id, request=[duplicate, duplicate])
        assert len(_predictions(label_studio, task.task_id)) == 3
        desk.send_for_review(project, [ReviewRequest("dup", label_studio.images["coffee"], "cup", 0.8, "v2")])
        assert desk.prune_predictions(project) == []  # v1 is the newest but one of an open task
        assert [p["model_version"] for p in _predictions(label_studio, task.task_id)] == ["v1"] * 3 + ["v2"]
        desk.send_for_review(project, [ReviewRequest("dup", label_studio.images["coffee"], "cat", 0.6, "v3")])
        assert desk.prune_predictions(project) == ["v1"]
        newest = desk.next_task(project)
    assert [p["model_version"] for p in _predictions(label_studio, task.task_id)] == ["v2", "v3"]
    assert (newest.predicted_label, newest.model_version, newest.score) == ("cat", "v3", pytest.approx(0.6))


def test_two_annotators_confirming_and_correcting_both_come_back(label_studio):
    second_token = label_studio.invite(f"second-{time.monotonic_ns()}@juicer.test")
    with label_studio.desk() as admin, label_studio.desk(second_token) as second:
        project = admin.ensure_project(CLASSES, label_studio.project_title("two annotators"))
        [task] = admin.send_for_review(project, [ReviewRequest("cat-photo", label_studio.images["chelsea"], "cat", 0.6, "v1")])
        confirmed = admin.submit_annotation(task.task_id, "cat")
        corrected = second.submit_annotation(task.task_id, "person")
        events, cursor = admin.pull_labels(project)
        again, _ = admin.pull_labels(project, PullCursor.from_json(cursor.to_json()))
        emails = admin.annotator_emails()
    by_annotation = {e.annotation_id: e for e in events}
    assert set(by_annotation) == {confirmed, corrected}
    assert {(e.item_id, e.label, e.action) for e in events} == {("cat-photo", "cat", "set"), ("cat-photo", "person", "set")}
    assert emails[by_annotation[confirmed].annotator] == label_studio.username
    assert emails[by_annotation[corrected].annotator].startswith("second-")
    assert again == []  # nothing is reported twice


def test_updates_replace_deletes_withdraw_and_skips_are_ignored(label_studio):
    images = label_studio.images
    with label_studio.desk() as desk:
        project = desk.ensure_project(CLASSES, label_studio.project_title("lifecycle"))
        tasks = desk.send_for_review(
            project, [ReviewRequest("a", images["coffee"], "cup", 0.3, "v1"), ReviewRequest("b", images["astronaut"], "cat", 0.2, "v1")]
        )
        annotation_id = desk.submit_annotation(tasks[0].task_id, "cat")
        desk.submit_annotation(tasks[1].task_id, None)  # skipped
        created, cursor = desk.pull_labels(project)
        desk.update_annotation(annotation_id, "cup")
        updated, cursor = desk.pull_labels(project, cursor)
        desk.delete_annotation(annotation_id)
        deleted, cursor = desk.pull_labels(project, cursor)
    assert [(e.item_id, e.label, e.action) for e in created] == [("a", "cat", "set")]
    assert [(e.annotation_id, e.label, e.action) for e in updated] == [(annotation_id, "cup", "set")]
    assert [(e.annotation_id, e.item_id, e.action) for e in deleted] == [(annotation_id, "a", "withdrawn")]
    assert cursor.seen == {}


def test_webhook_reaches_a_receiver_with_the_secret(label_studio, webhook_receiver):
    secret = "hook-secret-for-tests"
    with label_studio.desk() as desk:
        project = desk.ensure_project(CLASSES, label_studio.project_title("webhooks"))
        hook_id = desk.register_webhook(project, webhook_receiver.url, secret)
        assert desk.register_webhook(project, webhook_receiver.url, secret) == hook_id  # idempotent
        [task] = desk.send_for_review(project, [ReviewRequest("hooked", label_studio.images["coffee"], "cat", 0.5, "v1")])
        annotation_id = desk.submit_annotation(task.task_id, "cup")
        headers, created = webhook_receiver.wait_for(lambda b: b.get("action") == "ANNOTATION_CREATED")
        desk.update_annotation(annotation_id, "cat")
        _, updated = webhook_receiver.wait_for(lambda b: b.get("action") == "ANNOTATION_UPDATED")
        desk.delete_annotation(annotation_id)
        _, deleted = webhook_receiver.wait_for(lambda b: b.get("action") == "ANNOTATIONS_DELETED")
    assert check_secret(headers, secret) and not check_secret(headers, "another-secret")
    assert [(e.item_id, e.task_id, e.annotation_id, e.label, e.action) for e in parse_webhook(created)] == [
        ("hooked", task.task_id, annotation_id, "cup", "set")
    ]
    assert [(e.label, e.action) for e in parse_webhook(updated)] == [("cat", "set")]
    assert [(e.annotation_id, e.action) for e in parse_webhook(deleted)] == [(annotation_id, "withdrawn")]


def test_label_studio_keeps_its_files_private_and_serves_nothing_beside_the_images(label_studio):
    data = label_studio.launcher.data_dir
    assert stat.S_IMODE(data.stat().st_mode) == 0o700  # the launcher's umask: its database holds the admin token
    assert stat.S_IMODE((data / "label_studio.sqlite3").stat().st_mode) == 0o600
    with label_studio.desk() as desk:
        project = desk.ensure_project(CLASSES, label_studio.project_title("files"))
        for outside in (data, label_studio.files_root.parent):  # its own data, the document root itself
            with pytest.raises(AnnotationError):
                desk.client.request("POST", "/api/storages/localfiles", "adding a storage outside the images",
                                    json={"project": project.id, "path": str(outside), "title": "outside"})
        token = {"Authorization": f"Token {label_studio.token}"}
        image = f"{label_studio.files_root.name}/{label_studio.images['coffee']}"
        assert desk.client.http.get("/data/local-files/", params={"d": image}, headers=token).status_code == 200
        for escape in ("../data/label_studio.sqlite3", "images/../../data/label_studio.sqlite3"):
            answer = desk.client.http.get("/data/local-files/", params={"d": escape}, headers=token)
            assert answer.status_code != 200 and b"SQLite" not in answer.content, escape


def test_a_server_that_never_answers_times_out(label_studio):
    with socket.socket() as listener:  # accepts connections (backlog), never answers
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        url = f"http://127.0.0.1:{listener.getsockname()[1]}"
        with LabelStudioDesk(url, label_studio.token, timeout_s=0.5) as desk:
            started = time.monotonic()
            with pytest.raises(LabelStudioUnavailable, match="did not answer") as caught:
                desk.ensure_project(CLASSES, "never answered")
            elapsed = time.monotonic() - started
            assert not desk.health()
    assert caught.value.retryable and isinstance(caught.value.__cause__, httpx.TimeoutException)
    assert elapsed < 5


def test_with_the_server_stopped_calls_fail_fast_then_work_after_restart(label_studio):
    """Runs last in this module: stops the session's server and starts it again on the same data folder."""
    title = label_studio.project_title("restart")
    with label_studio.desk() as desk:
        project = desk.ensure_project(CLASSES, title)
    label_studio.launcher.stop()
    try:
        with label_studio.desk(timeout_s=3) as desk:
            assert not desk.health()
            calls = [
                lambda: desk.ensure_project(CLASSES, title),
                lambda: desk.send_for_review(project, [ReviewRequest("x", label_studio.images["coffee"], "cat", 0.1, "v1")]),
                lambda: desk.pull_labels(project),
                lambda: desk.next_task(project),
            ]
            for call in calls:
                started = time.monotonic()
                with pytest.raises(AnnotationError) as caught:
                    call()
                assert caught.value.retryable and time.monotonic() - started < 3
                assert "juicer labelstudio start" in str(caught.value)
    finally:
        label_studio.launcher.start(wait=True, timeout_s=180)
    with label_studio.desk() as desk:  # same data folder: the token and the project survived
        assert desk.ensure_project(CLASSES, title).id == project.id
