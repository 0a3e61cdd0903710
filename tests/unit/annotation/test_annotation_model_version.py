"""The project's model version only moves forward (httpx.MockTransport under the real SDK).

Label Studio's uncertainty queue serves only tasks holding a prediction of the project's model version: a
delivery that set an older version would hide every task the newest version re-scored.
"""

from __future__ import annotations

import json

import httpx
import pytest

from annotation.desk import LabelStudioDesk
from annotation.models import Project, ReviewRequest

URL = "http://ls.test"


def label_studio(project_version: list[str], calls: list) -> httpx.MockTransport:
    """One project (id 4) at ``project_version[0]`` with open guessed tasks (items a, b) and an open blind one (h)."""
    tasks = [{"id": 1, "data": {"item_id": "a"}}, {"id": 2, "data": {"item_id": "h", "kind": "holdout"}},
             {"id": 3, "data": {"item_id": "b"}}]

    def handler(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content) if request.content else None
        calls.append((request.method, request.url.path.rstrip("/"), body))
        if request.url.path == "/api/tasks/":
            return httpx.Response(200, json={"tasks": tasks, "total": len(tasks)})
        if request.method == "GET" and request.url.path.rstrip("/") == "/api/predictions":
            return httpx.Response(200, json=[])
        if request.url.path.rstrip("/") == "/api/projects/4":
            if request.method == "PATCH":
                project_version[0] = body["model_version"]
            return httpx.Response(200, json={"id": 4, "model_version": project_version[0], "sampling": "Uncertainty sampling"})
        return httpx.Response(201, json={"created": 1})

    return httpx.MockTransport(handler)


def test_an_older_version_never_moves_the_project_back():
    project_version, calls = ["v0002"], []
    with LabelStudioDesk(URL, "tok", transport=label_studio(project_version, calls)) as desk:
        desk.send_for_review(Project(4, "p", ("cat",), URL), [ReviewRequest("a", "images/a.png", "cat", 0.4, "v0001")])
    assert project_version == ["v0002"]
    assert not [body for method, _, body in calls if method == "PATCH"]
    placeholders = [body for method, path, body in calls if path.endswith("/import/predictions") and body[0]["task"] == 2]
    assert placeholders == []  # the blind task keeps the newest version's placeholder


def test_a_batch_mixing_versions_moves_the_project_to_the_newest():
    project_version, calls = ["v0001"], []
    requests = [ReviewRequest("b", "images/b.png", "cat", 0.4, "v0002"), ReviewRequest("a", "images/a.png", "cat", 0.3, "v0001")]
    with LabelStudioDesk(URL, "tok", transport=label_studio(project_version, calls)) as desk:
        desk.send_for_review(Project(4, "p", ("cat",), URL), requests)
    assert project_version == ["v0002"]
    [placeholders] = [body for method, path, body in calls if path.endswith("/import/predictions") and body[0]["task"] == 2]
    assert [(p["task"], p["model_version"]) for p in placeholders] == [(2, "v0002")]


@pytest.mark.parametrize(("older", "newer"), [("none", "v0001"), ("v0009", "v0010"), ("v9999", "v10000"), ("", "v1")])
def test_versions_rank_in_training_order(older, newer):
    from annotation.models import version_rank

    assert version_rank(older) < version_rank(newer)


@pytest.mark.parametrize(
    ("name", "seq"), [("v0007", 7), ("v10000", 10000), ("v1", 1), ("none", None), ("", None), (None, None),
                      ("v0007-other", None), ("V0007", None), ("model-v0007", None)],
)  # fmt: skip
def test_one_parser_reads_a_version_names_training_number(name, seq):
    """The desk's project version and the serving swap order versions by the same parse of the name."""
    from annotation.models import version_seq

    assert version_seq(name) == seq


@pytest.mark.parametrize("seq", [1, 7, 9999, 10000, 123456])
def test_a_version_name_reads_back_to_its_number_and_sorts_in_training_order(seq):
    from annotation.models import version_name, version_rank, version_seq

    assert version_seq(version_name(seq)) == seq
    assert version_rank(version_name(seq)) < version_rank(version_name(seq + 1))
    assert version_name(7) == "v0007"


def test_the_serving_swap_orders_versions_by_the_same_number():
    from app.core.serving import ServingModel, is_newer

    def model(version: str) -> ServingModel:
        return ServingModel(version, ("cat",), head=None, backbone_id="b", n_labels=1, max_label_id=1)

    assert is_newer(model("v10000"), model("v9999")) and not is_newer(model("v0009"), model("v0010"))
    assert is_newer(model("v0001"), model("none")) and not is_newer(model("none"), model("v0001"))
