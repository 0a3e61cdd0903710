"""The OpenAPI 3.1 document, generated from the routes, and the request checks, made from the same models.

Each view declares its query, JSON body and form as pydantic models and its answers as :class:`Answers`
(``@spec.validate(resp=Answers(...))``; spectree reads the models from the view's ``query``, ``json`` and
``form`` annotations). spectree builds ``GET /openapi.json`` from ``app.url_map`` and those declarations, and
validates every request against the same models before the view runs, so the document and the checks cannot
drift. A request that fails its model is a 400 problem body (RFC 9457): ``bad-parameter`` for the query string,
``missing-field``, ``bad-field`` or ``bad-request`` for the body. 2xx JSON answers are validated against their
models too: a mismatch is our bug, answered as a logged 500.

Every operation also documents a ``default`` problem response (any error is a problem body); the integration
suite fuzzes every operation against a running service with schemathesis and checks each answer against it.
"""

from __future__ import annotations

import copy
import re
from typing import Any, Iterable

from flask import Flask, Request
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from spectree import Response, SecurityScheme, SecuritySchemeData, SpecTree
from spectree.plugins.base import Context
from spectree.plugins.flask_plugin import FlaskPlugin
from spectree.utils import get_multidict_items

from app.http.problems import PROBLEM_CONTENT_TYPE, Problem

OPEN: list = []  # security of the routes that need no token (health, readiness, this document)
WEBHOOK_AUTH = [{"webhookSecret": []}]
ML_AUTH = [{"basicAuth": []}, {"bearerAuth": []}]
READ_AUTH = [{"bearerAuth": []}, {"basicAuth": []}]  # the pages and /metrics: a Bearer token, or a browser's Basic prompt
_PROBLEM_REF = {"$ref": "#/components/schemas/ProblemBody"}


class ProblemBody(BaseModel):
    """An error (RFC 9457): what went wrong and what to do; extension members as the problem needs."""

    model_config = ConfigDict(extra="allow")

    type: str
    title: str
    status: int = Field(ge=400, le=599)
    detail: str | None = None
    instance: str | None = None


class AnyObject(BaseModel):
    """A JSON object whose members this document does not list."""

    model_config = ConfigDict(extra="allow")


class Answers(Response):
    """An operation's answers: its 2xx (a JSON model, or ``media`` for a page or an image) and the problem
    statuses it may answer; ``default`` (any other problem) is added to every operation.

    ``Answers(HTTP_200=Model, problems=(400, 404))``; ``Answers("HTTP_200", media="text/html", problems=(401,))``.
    """

    def __init__(self, *codes: str, problems: Iterable[int] = (), media: str | None = None, **code_models: Any) -> None:
        super().__init__(*codes, **code_models)
        self.problems = tuple(problems)
        self.media = media

    def generate_spec(self, naming_strategy: Any = None) -> dict[str, Any]:
        """spectree's responses, with problem bodies as ``application/problem+json`` and a ``default``."""
        responses = super().generate_spec(naming_strategy) if naming_strategy else super().generate_spec()
        problem = {"content": {PROBLEM_CONTENT_TYPE: {"schema": _PROBLEM_REF}}}
        for code, answer in responses.items():
            if int(code) >= 400:
                answer.update(problem)
            elif "content" not in answer and self.media:
                binary = not self.media.startswith("text/")
                schema = {"type": "string", "format": "binary"} if binary else {"type": "string"}
                answer["content"] = {self.media: {"schema": schema}}
        for status in self.problems:
            responses.setdefault(str(status), {"description": "a problem (RFC 9457)", **problem})
        responses["default"] = {"description": "any other error, as a problem body", **problem}
        return responses


def _where(loc: tuple[Any, ...]) -> str:
    """``("labels", 0, "label")`` -> ``labels[0].label``."""
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def problem_from(error: ValidationError, part: str) -> Problem:
    """The 400 problem for a request ``part`` (``query``, ``body`` or ``form``) that failed its model."""
    errors = error.errors(include_url=False, include_input=False, include_context=False)
    first = errors[0]
    where = _where(first["loc"])
    listed = [{"field": _where(e["loc"]), "detail": e["msg"]} for e in errors[:20]]
    if part == "query":
        name = str(first["loc"][0]) if first["loc"] else "query"
        return Problem(400, "Bad parameter", f"{name}: {first['msg']}", type="bad-parameter", parameter=name, errors=listed)
    if first["type"] == "missing":
        detail = f"{where} is required" if where else first["msg"]
        return Problem(400, "Missing field", detail, type="missing-field", field=where or None, errors=listed)
    if not where:
        return Problem(400, f"Bad {part}", f"the {part}: {first['msg']}", type="bad-request", errors=listed)
    return Problem(400, "Bad field", f"{where}: {first['msg']}", type="bad-field", field=where, errors=listed)


def validated(model: type[BaseModel], value: Any, part: str = "body") -> BaseModel:
    """``value`` as ``model``, or the 400 problem saying what does not fit."""
    try:
        return model.model_validate(value)
    except ValidationError as exc:
        raise problem_from(exc, part) from None


def _has_body(request: Request) -> bool:
    return bool(request.content_length) or "chunked" in request.headers.get("Transfer-Encoding", "").lower()


def _json_expected() -> Problem:
    return Problem(415, "JSON expected", "send Content-Type: application/json with a JSON object", type="unsupported-media-type")


class _Checks(FlaskPlugin):
    """spectree's Flask plugin with juicer's rules for bodies: JSON is read by the app's streamed reader, malformed
    JSON is a 400 (not an empty object), no body is an empty object, a body of another type is a 415 (unless
    the view also takes a form: its reader answers), and a failed model is a problem body."""

    def request_validation(self, request: Request, query: Any, json: Any, form: Any, headers: Any, cookies: Any) -> None:
        writes = request.method not in ("GET", "HEAD", "DELETE")
        is_form = request.mimetype in self.FORM_MIMETYPE
        body = form_body = None
        if query is not None:
            query = validated(query, get_multidict_items(request.args, query), "query")
        if form is not None and writes and is_form:
            fields = get_multidict_items(request.form, form) | get_multidict_items(request.files, form)
            form_body = validated(form, fields, "form")
        if json is not None and writes and not is_form:
            if request.is_json and _has_body(request):
                body = validated(json, request.get_json(), "body")  # malformed JSON: werkzeug's 400
            elif not _has_body(request):
                body = validated(json, {}, "body") if form is None else None
            elif form is None:
                raise _json_expected()
        elif json is not None and writes and form is None:  # a form sent to a view that takes JSON only
            raise _json_expected()
        request.context = Context(query, body, form_body, None, None)


def _raise_mismatch(req: Any, resp: Any, error: Exception | None, instance: Any, adapter: Any) -> None:
    """A 2xx answer that does not fit its model is our bug: the app's 500 handler logs it."""
    if error is not None:
        raise RuntimeError(f"the answer of {req.method} {req.path} does not fit the OpenAPI document") from error


spec = SpecTree(
    backend=_Checks,
    title="juicer",
    version="1",
    description="Human-in-the-loop active learning for image classification. Errors are RFC 9457 problem bodies.",
    naming_strategy=lambda model: model.__name__,
    validation_error_status=400,
    validation_error_model=ProblemBody,
    after=_raise_mismatch,
    security={"bearerAuth": []},
    security_schemes=[
        SecurityScheme(name="bearerAuth", data=SecuritySchemeData(type="http", scheme="bearer", description="service.api_token (see README, Security)")),
        SecurityScheme(name="webhookSecret", data=SecuritySchemeData(type="apiKey", field_in="header", name="X-Juicer-Secret")),
        SecurityScheme(name="basicAuth", data=SecuritySchemeData(type="http", scheme="basic", description="any user name, service.api_token as the password")),
    ],
)  # fmt: skip


def openapi_document(app: Flask) -> dict[str, Any]:
    """The OpenAPI 3.1 document of every route of ``app`` (built once per process: the routes are declared at import)."""
    with app.app_context():
        document = copy.deepcopy(spec.spec)
    document["components"].setdefault("schemas", {})["ProblemBody"] = ProblemBody.model_json_schema()
    return document


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
