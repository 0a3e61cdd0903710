"""Every error the service answers is an RFC 9457 problem body (``application/problem+json``).

This is the one place that maps errors to HTTP. Code in views raises, and the handlers installed by
:func:`register_error_handlers` turn the exception into a response:

====================================================  ======  =========================================
raised                                                status  why
====================================================  ======  =========================================
:class:`Problem` (raised by our own views)            any     the view chose status, title and detail
``learner.errors.ImageTooLargeError``                 413     decodes past the pixel limit (a bomb)
``learner.errors.ImageError`` (decode, truncated)     422     the bytes arrived but are not a usable image
werkzeug ``RequestEntityTooLarge``                    413     the upload is over ``MAX_CONTENT_LENGTH``
werkzeug ``BadRequest`` (bad JSON, bad form)          400     the caller's request is malformed
werkzeug ``ClientDisconnected``                       408     the body stopped arriving (request deadline)
werkzeug ``Unauthorized``                             401     with a ``WWW-Authenticate: Bearer`` header
werkzeug ``NotFound`` / ``MethodNotAllowed``          404/405 unknown route / wrong method (``Allow`` kept)
``annotation.errors.AnnotationError``, retryable      503     Label Studio is down or slow; ``Retry-After``
``annotation.errors.AnnotationError``, not retryable  502     Label Studio refused what we sent
anything else                                         500     a generic body; the traceback goes to the log
====================================================  ======  =========================================

A failure never gets a 2xx and a body never carries a traceback. 5xx bodies carry an ``error_id`` that
is also in the log line, so an operator can find the traceback from a user's report.
"""

from __future__ import annotations

import logging
import uuid
from http import HTTPStatus
from typing import Any, Mapping

from flask import Flask, Response, json, request
from werkzeug.exceptions import ClientDisconnected, HTTPException

from annotation.errors import AnnotationError
from learner.errors import ImageError, ImageTooLargeError

logger = logging.getLogger(__name__)

PROBLEM_CONTENT_TYPE = "application/problem+json"
# Our own problem types: URNs, since the service has no public documentation site to point at.
TYPE_PREFIX = "urn:juicer:problem:"
BEARER_CHALLENGE = 'Bearer realm="juicer"'
BASIC_CHALLENGE = 'Basic realm="juicer"'  # a browser answers it with its own prompt (pages, Label Studio's door)
RETRY_AFTER_S = 30


def _title(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


class Problem(Exception):
    """An error a view raises to answer with a problem body: ``raise Problem(404, "Unknown model", "...")``.

    ``type`` is a URI naming the kind of problem (default ``about:blank``, meaning "just the HTTP status");
    a bare slug such as ``"unknown-label"`` becomes ``urn:juicer:problem:unknown-label``. ``extra`` members
    are added to the body (RFC 9457 extension members); ``headers`` are added to the response.
    """

    def __init__(
        self,
        status: int,
        title: str | None = None,
        detail: str | None = None,
        *,
        type: str = "about:blank",
        headers: Mapping[str, str] | None = None,
        **extra: Any,
    ) -> None:
        if not 400 <= int(status) <= 599:
            raise ValueError(f"a problem needs a 4xx or 5xx status, not {status}")
        self.status = int(status)
        self.title = title or _title(self.status)
        self.detail = detail
        self.type = type if (":" in type) else TYPE_PREFIX + type
        self.headers = dict(headers or {})
        self.extra = extra
        super().__init__(f"{self.status} {self.title}: {detail}" if detail else f"{self.status} {self.title}")

    def body(self, instance: str | None = None) -> dict[str, Any]:
        """The JSON members of this problem (``instance`` is the request path when given)."""
        body: dict[str, Any] = {"type": self.type, "title": self.title, "status": self.status}
        if self.detail:
            body["detail"] = self.detail
        if instance:
            body["instance"] = instance
        for key, value in self.extra.items():
            body.setdefault(key, value)
        return body

    def to_response(self, instance: str | None = None) -> Response:
        """This problem as a Flask response with the problem+json content type."""
        response = Response(json.dumps(self.body(instance)), status=self.status, mimetype=PROBLEM_CONTENT_TYPE)
        for name, value in self.headers.items():
            response.headers[name] = value
        return response


def unauthorized(detail: str = "send the API token as 'Authorization: Bearer <token>'", challenge: str = BEARER_CHALLENGE) -> Problem:
    """The 401 problem for a missing or wrong API token, with the ``WWW-Authenticate`` challenge (Bearer by default;
    :data:`BASIC_CHALLENGE` where a person opens the path in a browser)."""
    return Problem(401, "Unauthorized", detail, type="unauthorized", headers={"WWW-Authenticate": challenge})


def _instance() -> str | None:
    try:
        return request.path
    except RuntimeError:  # outside a request context
        return None


def request_timeout() -> Problem:
    """408: the request body stopped arriving (a read past ``service.read_timeout_s`` or the request deadline)."""
    return Problem(
        408,
        "Request timeout",
        "the request body did not arrive in time (service.request_deadline_s, service.read_timeout_s); "
        "send it again in one go, or send fewer images per request",
        type="request-timeout",
    )


def _from_http_exception(exc: HTTPException) -> Problem:
    if isinstance(exc, ClientDisconnected):  # the body stopped arriving: the request deadline, or the client left
        return request_timeout()
    status = exc.code or 500
    headers = {name: value for name, value in exc.get_headers() if name.lower() != "content-type"}
    if status == 401 and "WWW-Authenticate" not in headers:
        headers["WWW-Authenticate"] = BEARER_CHALLENGE
    if status >= 500:
        # werkzeug's own 5xx descriptions are generic; keep them, but never anything from a traceback.
        return Problem(status, exc.name, exc.description, headers=headers)
    detail = exc.description
    if status == 413:
        limit = None
        try:
            from flask import request

            limit = request.max_content_length  # the app's MAX_CONTENT_LENGTH, or a view's own (the webhooks')
        except RuntimeError:
            pass
        detail = (
            f"the request body is larger than the service accepts ({limit} bytes); send fewer or smaller images"
            if limit
            else "the request body is larger than the service accepts; send fewer or smaller images"
        )
        return Problem(413, exc.name, detail, type="request-too-large", headers=headers, max_bytes=limit)
    return Problem(status, exc.name, detail, headers=headers)


def _from_image_error(exc: ImageError) -> Problem:
    if isinstance(exc, ImageTooLargeError):
        return Problem(
            413,
            "Image too large",
            f"{exc.source}: {exc.reason}; send a smaller image",
            type="image-too-large",
            source=exc.source,
        )
    return Problem(
        422,
        "Not a usable image",
        f"{exc.source}: {exc.reason}; send a JPEG, PNG, GIF or WebP file",
        type="image-decode",
        source=exc.source,
    )


def _from_annotation_error(exc: AnnotationError) -> Problem:
    if exc.retryable:
        return Problem(
            503,
            "Label Studio unavailable",
            f"Label Studio could not be reached or answered too slowly ({exc}); try again later",
            type="annotation-unavailable",
            headers={"Retry-After": str(RETRY_AFTER_S)},
        )
    return Problem(
        502,
        "Label Studio refused the request",
        f"Label Studio refused what juicer sent ({exc}); check the Label Studio project and token",
        type="annotation-refused",
    )


def _internal_error(exc: Exception) -> Problem:
    error_id = uuid.uuid4().hex[:12]
    logger.error("unhandled error %s on %s %s", error_id, request.method, request.path, exc_info=exc)
    return Problem(
        500,
        "Internal Server Error",
        f"juicer failed to handle this request; report error id {error_id} to the operator",
        error_id=error_id,
    )


def register_error_handlers(app: Flask) -> None:
    """Install handlers on ``app`` so that every error, ours or werkzeug's, is answered as a problem body."""

    @app.errorhandler(Problem)
    def _problem(exc: Problem) -> Response:
        if exc.status >= 500:
            logger.warning("%s %s answered %s", request.method, request.path, exc)
        return exc.to_response(_instance())

    @app.errorhandler(HTTPException)
    def _http(exc: HTTPException) -> Response:
        return _from_http_exception(exc).to_response(_instance())

    @app.errorhandler(ImageError)
    def _image(exc: ImageError) -> Response:
        logger.info("rejected image on %s: %s", request.path, exc)
        return _from_image_error(exc).to_response(_instance())

    @app.errorhandler(AnnotationError)
    def _annotation(exc: AnnotationError) -> Response:
        logger.warning("Label Studio error on %s %s: %s", request.method, request.path, exc, exc_info=exc)
        return _from_annotation_error(exc).to_response(_instance())

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> Response:
        return _internal_error(exc).to_response(_instance())
