"""The OpenAPI document describes exactly the routes the app has (so it cannot drift) and is served openly."""

from __future__ import annotations

from app.http.openapi import flask_rule_to_openapi, openapi_document, routes


def test_the_document_matches_the_url_map(app):
    documented = {(path, method) for path, operations in openapi_document()["paths"].items() for method in operations}
    assert documented == routes(app)


def test_every_operation_documents_a_problem_for_errors():
    for path, operations in openapi_document()["paths"].items():
        for method, operation in operations.items():
            assert "default" in operation["responses"], f"{method} {path}"
            assert any(code.startswith("2") for code in operation["responses"]), f"{method} {path}"


def test_openapi_json_is_served_without_a_token(app):
    response = app.test_client().get("/openapi.json")
    assert response.status_code == 200 and response.json["openapi"].startswith("3.1")


def test_the_document_loads_in_schemathesis():
    import schemathesis

    schema = schemathesis.openapi.from_dict(openapi_document())
    assert len(list(schema.get_all_operations())) == sum(len(ops) for ops in openapi_document()["paths"].values())


def test_flask_rules_become_openapi_paths():
    assert flask_rule_to_openapi("/v1/items/<path:item_id>") == "/v1/items/{item_id}"
    assert flask_rule_to_openapi("/v1/jobs/<int:job_id>") == "/v1/jobs/{job_id}"
