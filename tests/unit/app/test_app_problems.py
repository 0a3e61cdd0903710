"""Every failure is answered as an RFC 9457 problem body with a 4xx/5xx status, never with a traceback."""

import logging

import pytest
from flask import Flask, request

from app.http.problems import PROBLEM_CONTENT_TYPE, Problem, register_error_handlers, unauthorized
from learner.errors import BackboneError, ImageDecodeError, ImageTooLargeError


class Secret(RuntimeError):
    pass


@pytest.fixture
def client():
    app = Flask("problems-test")
    app.config["MAX_CONTENT_LENGTH"] = 1024
    register_error_handlers(app)

    @app.post("/json")
    def take_json():
        return {"got": request.get_json()["name"]}

    @app.post("/upload")
    def upload():
        return {"size": len(request.get_data())}

    @app.get("/decode")
    def decode():
        raise ImageDecodeError("cannot identify image file", source="cat.jpg")

    @app.get("/bomb")
    def bomb():
        raise ImageTooLargeError("decodes to 100000000 pixels, more than the limit of 40000000", source="bomb.png")

    @app.get("/crash")
    def crash():
        raise Secret("password=hunter2 in a stack frame")

    @app.get("/backbone")
    def backbone():
        raise BackboneError("no SavedModel at /data/backbones/x")

    @app.get("/raised")
    def raised():
        raise Problem(409, "Label conflicts", "item fm-1 already has label 'shirt'", type="label-conflict", item_id="fm-1")

    @app.get("/plain")
    def plain():
        raise Problem(400, "Missing field", "field 'image' is required", field="image")

    @app.get("/private")
    def private():
        raise unauthorized()

    return app.test_client()


def assert_problem(response, status):
    assert response.status_code == status
    assert response.mimetype == PROBLEM_CONTENT_TYPE
    body = response.get_json(force=True)
    assert body["status"] == status
    assert body["title"] and body["type"]
    assert "Traceback" not in response.get_data(as_text=True)
    return body


def test_unknown_route_is_404_problem(client):
    body = assert_problem(client.get("/nope"), 404)
    assert body["instance"] == "/nope"


def test_wrong_method_is_405_with_allow_header(client):
    response = client.get("/json")
    assert_problem(response, 405)
    assert "POST" in response.headers["Allow"]


def test_bad_json_is_400(client):
    body = assert_problem(client.post("/json", data="{not json", content_type="application/json"), 400)
    assert body["detail"]


def test_oversized_body_is_413_naming_the_limit(client):
    body = assert_problem(client.post("/upload", data=b"x" * 4096), 413)
    assert body["max_bytes"] == 1024
    assert "1024" in body["detail"]


def test_undecodable_image_is_422_naming_the_file(client):
    body = assert_problem(client.get("/decode"), 422)
    assert body["type"] == "urn:juicer:problem:image-decode"
    assert body["source"] == "cat.jpg" and "cat.jpg" in body["detail"]


def test_pixel_bomb_is_413(client):
    body = assert_problem(client.get("/bomb"), 413)
    assert body["type"] == "urn:juicer:problem:image-too-large"


def test_unexpected_exception_is_generic_500_and_logged(client, caplog):
    with caplog.at_level(logging.ERROR, logger="app.http.problems"):
        response = client.get("/crash")
    body = assert_problem(response, 500)
    text = response.get_data(as_text=True)
    assert "hunter2" not in text and "Secret" not in text
    assert body["error_id"] in body["detail"]
    logged = [r for r in caplog.records if body["error_id"] in r.getMessage()]
    assert logged and logged[0].exc_info is not None


def test_learner_error_that_is_not_the_callers_fault_is_500(client):
    body = assert_problem(client.get("/backbone"), 500)
    assert "/data/backbones" not in body["detail"]


def test_raised_problem_keeps_its_members(client):
    body = assert_problem(client.get("/raised"), 409)
    assert body == {
        "type": "urn:juicer:problem:label-conflict",
        "title": "Label conflicts",
        "status": 409,
        "detail": "item fm-1 already has label 'shirt'",
        "instance": "/raised",
        "item_id": "fm-1",
    }


def test_a_problem_without_a_type_is_about_blank(client):
    body = assert_problem(client.get("/plain"), 400)
    assert body["field"] == "image" and body["type"] == "about:blank"


def test_unauthorized_carries_bearer_challenge(client):
    response = client.get("/private")
    assert_problem(response, 401)
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


def test_werkzeug_unauthorized_also_gets_a_challenge():
    from werkzeug.exceptions import Unauthorized

    app = Flask("unauthorized-test")
    register_error_handlers(app)

    @app.get("/x")
    def x():
        raise Unauthorized("wrong token")

    response = app.test_client().get("/x")
    assert_problem(response, 401)
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


def test_problem_refuses_a_success_status():
    with pytest.raises(ValueError):
        Problem(200, "OK")


def test_handlers_are_per_app_instance():
    plain = Flask("plain")
    handled = Flask("handled")
    register_error_handlers(handled)
    assert plain.test_client().get("/nope").mimetype != PROBLEM_CONTENT_TYPE
    assert handled.test_client().get("/nope").mimetype == PROBLEM_CONTENT_TYPE


def test_annotation_errors_map_by_retryability():
    errors = pytest.importorskip("annotation.errors")
    app = Flask("annotation-test")
    register_error_handlers(app)

    @app.get("/down")
    def down():
        raise errors.AnnotationError("connection refused", retryable=True)

    @app.get("/refused")
    def refused():
        raise errors.AnnotationError("400 bad label config", retryable=False)

    client = app.test_client()
    response = client.get("/down")
    assert_problem(response, 503)
    assert int(response.headers["Retry-After"]) > 0
    assert_problem(client.get("/refused"), 502)
