"""The OpenAPI 3.1 description of the service, served at ``GET /openapi.json``.

Hand-written here, next to nothing else, and held to the real routes by a test
(``tests/unit/app/test_app_openapi.py`` compares every path and method with ``app.url_map``), so it cannot
drift. Every error is a problem body (RFC 9457), so each operation documents its 2xx answer and a
``default`` problem response; the integration suite fuzzes every operation against a running service with
schemathesis and checks each response against this document.
"""

from __future__ import annotations

import re
from typing import Any

from flask import Flask

PROBLEM = {"$ref": "#/components/schemas/Problem"}
JSON_OBJECT = {"type": "object"}


def _problem_responses(*statuses: int) -> dict[str, Any]:
    body = {"application/problem+json": {"schema": PROBLEM}}
    responses: dict[str, Any] = {str(status): {"description": "a problem (RFC 9457)", "content": body} for status in statuses}
    responses["default"] = {"description": "any other error, as a problem body", "content": body}
    return responses


def _ok(schema: dict[str, Any], status: int = 200, description: str = "done", mimetype: str = "application/json") -> dict[str, Any]:
    return {str(status): {"description": description, "content": {mimetype: {"schema": schema}}}}


def _operation(summary: str, responses: dict[str, Any], *, body: dict[str, Any] | None = None, params: list | None = None,
               security: list | None = None) -> dict[str, Any]:  # fmt: skip
    operation: dict[str, Any] = {"summary": summary, "responses": responses}
    if body is not None:
        operation["requestBody"] = body
    if params:
        operation["parameters"] = params
    if security is not None:
        operation["security"] = security
    return operation


def _query(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "schema": schema, "description": description}


def _path(name: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": schema}


IMAGES_BODY = {
    "required": True,
    "content": {
        "application/json": {
            "schema": {
                "type": "object",
                "properties": {
                    "images": {
                        "type": "array",
                        "items": {
                            "oneOf": [
                                {"type": "string", "contentEncoding": "base64"},
                                {"type": "object", "properties": {"data": {"type": "string"}, "filename": {"type": "string"}},
                                 "required": ["data"]},
                            ]
                        },
                    },
                    "image": {"type": "string", "contentEncoding": "base64"},
                },
            }
        },
        "multipart/form-data": {"schema": {"type": "object", "properties": {"image": {"type": "string", "format": "binary"}}}},
    },
}  # fmt: skip

PREDICTION = {
    "type": "object",
    "required": ["item_id", "label", "probabilities", "decision", "rule", "model_version"],
    "properties": {
        "item_id": {"type": "string"},
        "label": {"type": "string"},
        "score": {"type": "number"},
        "probabilities": {"type": "object", "additionalProperties": {"type": "number"}},
        "decision": {"enum": ["accept", "review"]},
        "rule": {"type": "string"},
        "reason": {"type": ["string", "null"]},
        "model_version": {"type": "string"},
    },
}

LABELS_BODY = {
    "required": True,
    "content": {
        "application/json": {
            "schema": {
                "type": "object",
                "properties": {
                    "labels": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "properties": {
                                "item_id": {"type": "string"}, "label": {"type": "string"},
                                "image": {"type": "string", "contentEncoding": "base64"}, "annotator": {"type": "string"},
                            },
                            "required": ["label"],
                        },
                    }
                },
                "required": ["labels"],
            }
        },
        "multipart/form-data": {
            "schema": {"type": "object", "properties": {"image": {"type": "string", "format": "binary"}, "label": {"type": "string"}}}
        },
    },
}  # fmt: skip

OPEN: list = []  # security: none
WEBHOOK_AUTH = [{"webhookSecret": []}]
ML_AUTH = [{"basicAuth": []}, {"bearerAuth": []}]


def _paths() -> dict[str, dict[str, Any]]:
    page = [_query("limit", {"type": "integer", "minimum": 1, "maximum": 1000}, "page size"),
            _query("offset", {"type": "integer", "minimum": 0}, "items to skip")]  # fmt: skip
    return {
        "/v1/predict": {"post": _operation(
            "Predict one or many images; those decided 'review' are queued for annotators",
            _ok({"type": "object", "required": ["model_version", "predictions"],
                 "properties": {"model_version": {"type": "string"}, "predictions": {"type": "array", "items": PREDICTION}}})
            | _problem_responses(400, 401, 403, 413, 415, 422, 503),
            body=IMAGES_BODY)},
        "/v1/items": {
            "post": _operation("Add unlabelled images to the pool",
                               _ok({"type": "object", "required": ["items"], "properties": {"items": {"type": "array"}}}, 201, "added")
                               | _problem_responses(400, 401, 403, 413, 415, 422), body=IMAGES_BODY),
            "get": _operation("Items, newest first; or the conflicts, or the quarantined ones",
                              _ok({"type": "object", "required": ["items"], "properties": {"items": {"type": "array"}}})
                              | _problem_responses(400, 401),
                              params=[_query("split", {"enum": ["seed", "pool", "holdout", "served"]}, "only this split"),
                                      _query("conflicts", {"enum": ["true", "false"]}, "items whose annotators disagree"),
                                      _query("quarantined", {"enum": ["true", "false"]}, "items whose image is missing"),
                                      *page]),
        },
        "/v1/items/{item_id}": {"get": _operation(
            "One item with its label, latest prediction and review status",
            _ok({"type": "object", "required": ["id", "split"]}) | _problem_responses(401, 404),
            params=[_path("item_id", {"type": "string"})])},
        "/v1/labels": {"post": _operation(
            "Add labels for known items, or new images with their labels (validated whole before anything is stored)",
            _ok({"type": "object", "required": ["labels"], "properties": {"labels": {"type": "array"}}}, 201, "recorded")
            | _problem_responses(400, 401, 403, 404, 409, 413, 415, 422), body=LABELS_BODY)},
        "/v1/reviews/retry": {"post": _operation(
            "Put the review tasks that gave up back in the outbox",
            _ok({"type": "object", "required": ["requeued"], "properties": {"requeued": {"type": "integer"}}})
            | _problem_responses(401, 403))},
        "/v1/webhooks/label-studio": {"post": _operation(
            "Label Studio's webhook: the event is recorded and applied by a job",
            _ok({"type": "object", "required": ["recorded"], "properties": {"recorded": {"type": "integer"}}})
            | _problem_responses(400, 401, 413, 415),
            body={"required": True, "content": {"application/json": {"schema": JSON_OBJECT}}}, security=WEBHOOK_AUTH)},
        "/v1/retrain": {"post": _operation(
            "Queue a retrain; poll the job",
            _ok({"type": "object", "required": ["job_id", "status", "status_url"]}, 202, "queued") | _problem_responses(400, 401, 403, 503),
            params=[_query("force", {"enum": ["true", "false"]}, "retrain even when no label changed")])},
        "/v1/jobs/{job_id}": {"get": _operation(
            "A background job's status and result",
            _ok({"type": "object", "required": ["id", "kind", "status"]}) | _problem_responses(401, 404),
            params=[_path("job_id", {"type": "integer", "minimum": 0})])},  # no maximum: a huge id is a 404 too
        "/v1/models": {"get": _operation(
            "Every model version, oldest first",
            _ok({"type": "object", "required": ["models", "current"]}) | _problem_responses(401))},
        "/v1/models/current": {"get": _operation(
            "The version serving now", _ok({"type": "object", "required": ["model_version"]}) | _problem_responses(401, 503))},
        "/v1/report": {"get": _operation(
            "Accuracy against labels, one point per model version",
            _ok({"type": "object", "required": ["points"], "properties": {"points": {"type": "array"}}}) | _problem_responses(401))},
        "/v1/forecast": {"get": _operation(
            "The fitted learning curve and what more labels buy",
            _ok(JSON_OBJECT) | _problem_responses(400, 401),
            params=[_query("target", {"type": "number"}, "an accuracy to reach (0-1): the labels it needs")])},
        "/gallery": {"get": _operation("A holdout sample captioned by each version's guess", _ok({"type": "string"}, mimetype="text/html")
                                       | _problem_responses(401, 404),
                                       params=[_query("version", {"type": "string"}, "a model version")], security=OPEN)},
        "/gallery.gif": {"get": _operation("The gallery as one animation", _ok({"type": "string", "format": "binary"}, mimetype="image/gif")
                                           | _problem_responses(401, 404), security=OPEN)},
        "/report": {"get": _operation("The report as an HTML page", _ok({"type": "string"}, mimetype="text/html")
                                      | _problem_responses(401), security=OPEN)},
        "/report.png": {"get": _operation("The report's plot", _ok({"type": "string", "format": "binary"}, mimetype="image/png")
                                          | _problem_responses(401), security=OPEN)},
        "/healthz": {"get": _operation("The process answers", _ok(JSON_OBJECT) | _problem_responses(), security=OPEN)},
        "/readyz": {"get": _operation(
            "Ready (model and store); 'degraded' while Label Studio is away",
            _ok({"type": "object", "required": ["status", "checks"], "properties": {"status": {"enum": ["ready", "degraded"]}}})
            | _problem_responses(503), security=OPEN)},
        "/metrics": {"get": _operation("Prometheus metrics", _ok({"type": "string"}, mimetype="text/plain")
                                       | _problem_responses(401), security=OPEN)},
        "/openapi.json": {"get": _operation("This document", _ok(JSON_OBJECT) | _problem_responses(), security=OPEN)},
        # Label Studio's ML-backend protocol (app.http.ml_backend): what Label Studio calls once juicer's URL is pasted.
        "/label-studio-ml/": {"get": _operation("Label Studio's status check", _ok(JSON_OBJECT) | _problem_responses(401),
                                                security=ML_AUTH)},
        "/label-studio-ml/health": {"get": _operation("Label Studio's health check", _ok(JSON_OBJECT)
                                                      | _problem_responses(401), security=ML_AUTH)},
        "/label-studio-ml/setup": {"post": _operation(
            "Label Studio connects a project: the serving model version, or why its labelling config does not fit",
            _ok(JSON_OBJECT) | _problem_responses(400, 401, 413, 415, 422, 503),
            body={"required": True, "content": {"application/json": {"schema": JSON_OBJECT}}}, security=ML_AUTH)},
        "/label-studio-ml/predict": {"post": _operation(
            "Predictions for Label Studio tasks, in task order, each stamped with the model version",
            _ok(JSON_OBJECT) | _problem_responses(400, 401, 413, 415, 422, 503),
            body={"required": True, "content": {"application/json": {"schema": JSON_OBJECT}}}, security=ML_AUTH)},
        "/label-studio-ml/webhook": {"post": _operation(
            "START_TRAINING queues a retrain; annotation events are recorded (checked against Label Studio later)",
            _ok(JSON_OBJECT) | _ok(JSON_OBJECT, 201) | _problem_responses(400, 401, 413, 415, 503),
            body={"required": True, "content": {"application/json": {"schema": JSON_OBJECT}}}, security=ML_AUTH)},
        "/label-studio-ml/versions": {"get": _operation("Every model version", _ok(JSON_OBJECT) | _problem_responses(401),
                                                        security=ML_AUTH)},
    }  # fmt: skip


def openapi_document() -> dict[str, Any]:
    """The OpenAPI 3.1 document of every route."""
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "juicer",
            "version": "1",
            "description": "Human-in-the-loop active learning for image classification. Errors are RFC 9457 problem bodies.",
        },
        "paths": _paths(),
        "security": [{"bearerAuth": []}],
        "components": {
            "securitySchemes": {
                "bearerAuth": {"type": "http", "scheme": "bearer", "description": "service.api_token (see README, Security)"},
                "webhookSecret": {"type": "apiKey", "in": "header", "name": "X-Juicer-Secret"},
                "basicAuth": {"type": "http", "scheme": "basic", "description": "any user name, service.api_token as the password"},
            },
            "schemas": {
                "Problem": {
                    "type": "object",
                    "required": ["type", "title", "status"],
                    "properties": {
                        "type": {"type": "string"},
                        "title": {"type": "string"},
                        "status": {"type": "integer", "minimum": 400, "maximum": 599},
                        "detail": {"type": "string"},
                        "instance": {"type": "string"},
                    },
                }
            },
        },
    }


def flask_rule_to_openapi(rule: str) -> str:
    """``/v1/items/<path:item_id>`` -> ``/v1/items/{item_id}``."""
    return re.sub(r"<(?:[a-z]+:)?([a-z_]+)>", r"{\1}", rule)


def routes(app: Flask) -> set[tuple[str, str]]:
    """(OpenAPI path, lower-case method) of every route of ``app`` (HEAD and OPTIONS left out)."""
    return {
        (flask_rule_to_openapi(rule.rule), method.lower())
        for rule in app.url_map.iter_rules()
        for method in rule.methods - {"HEAD", "OPTIONS"}
    }
