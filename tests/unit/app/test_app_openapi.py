"""The OpenAPI document is generated from the routes (so it cannot drift), is served openly, and the requests
are checked against the same models it shows."""

from __future__ import annotations

import pytest

from app.http.openapi import flask_rule_to_openapi, openapi_document, routes


def test_the_document_matches_the_url_map(app):
    documented = {(path, method) for path, operations in openapi_document(app)["paths"].items() for method in operations}
    assert documented == routes(app)


def test_every_operation_documents_a_problem_for_errors(app):
    for path, operations in openapi_document(app)["paths"].items():
        for method, operation in operations.items():
            assert "default" in operation["responses"], f"{method} {path}"
            assert any(code.startswith("2") for code in operation["responses"]), f"{method} {path}"
            for code, answer in operation["responses"].items():
                if code == "default" or code >= "4":
                    assert list(answer["content"]) == ["application/problem+json"], f"{method} {path} {code}"


def test_openapi_json_is_served_without_a_token(app):
    response = app.test_client().get("/openapi.json")
    assert response.status_code == 200 and response.json["openapi"].startswith("3.1")
    assert response.json == openapi_document(app)


def test_the_document_loads_in_schemathesis(app):
    import schemathesis

    document = openapi_document(app)
    schema = schemathesis.openapi.from_dict(document)
    assert len(list(schema.get_all_operations())) == sum(len(ops) for ops in document["paths"].values())


def test_query_parameters_come_from_the_model_that_checks_them(app, client):
    [operation] = [openapi_document(app)["paths"]["/v1/items"]["get"]]
    limit = next(p for p in operation["parameters"] if p["name"] == "limit")
    assert (limit["in"], limit["schema"]["minimum"], limit["schema"]["maximum"]) == ("query", 1, 1000)
    response = client.get("/v1/items?limit=1001")
    assert response.status_code == 400 and response.mimetype == "application/problem+json"
    assert response.json["type"].endswith("bad-parameter") and response.json["parameter"] == "limit"


@pytest.mark.parametrize("body, kind", [({"labels": []}, "bad-field"), ({"labels": [{"item_id": "p1"}]}, "missing-field"),
                                        ([1, 2], "bad-request")])  # fmt: skip
def test_a_body_that_does_not_fit_its_model_is_a_400_problem(client, body, kind):
    response = client.post("/v1/labels", json=body)
    assert response.status_code == 400 and response.mimetype == "application/problem+json"
    assert response.json["type"].endswith(kind), response.json


def test_flask_rules_become_openapi_paths():
    assert flask_rule_to_openapi("/v1/items/<path:item_id>") == "/v1/items/{item_id}"
    assert flask_rule_to_openapi("/v1/jobs/<int:job_id>") == "/v1/jobs/{job_id}"


@pytest.mark.parametrize("path", ["/v1/retrain", "/v1/classes"])
def test_a_form_sent_to_a_json_only_view_is_a_415(client, path):
    response = client.post(path, data=b'{"name": "x"}', headers={"Content-Type": "multipart/form-data"})
    assert response.status_code == 415 and response.json["type"].endswith("unsupported-media-type")
