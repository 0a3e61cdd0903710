"""Checks every request passes before a view runs: the token and the origin of browser writes.

Cheap before expensive, and in this order (:func:`install_guards`):

1. **Token.** ``/v1/*`` needs ``Authorization: Bearer <token>`` (:func:`app.core.secrets.api_token`), except the
   Label Studio webhook, which carries its own secret; paths outside ``/v1`` are open only when listed in
   ``service.public_paths`` (health, readiness, metrics and the report pages by default).
2. **Origin.** A write (any method but GET, HEAD, OPTIONS) carrying an ``Origin`` header that is neither the
   service's own host nor listed in ``service.allowed_origins`` is refused (403): a web page a user happens to
   open cannot make their browser POST to a service on their machine.

The JSON depth limit is enforced while a body is parsed (:mod:`app.http.jsonbody`), never by reading it whole first.
"""

from __future__ import annotations

import hmac
from urllib.parse import urlsplit

from flask import Flask, request

from app.http.context import services
from app.http.problems import Problem, unauthorized

WEBHOOK_ENDPOINT = "api.label_studio_webhook"
ML_BACKEND_PREFIX = "/label-studio-ml"
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")


def token_refusal(*, basic: bool = False) -> str | None:
    """Why the request lacks juicer's API token, or None when it carries it (or the API is not token-protected).

    ``Authorization: Bearer <token>``; with ``basic``, also Basic auth with the token as the password (any user
    name: Label Studio's "Basic auth" for an ML backend). The one token check of both HTTP doors.
    """
    from app.core.secrets import api_token

    token = api_token(services().settings)
    if token is None:
        return None
    given = None
    auth = request.authorization
    if auth is not None and auth.type == "bearer":
        given = auth.token
    elif auth is not None and auth.type == "basic" and basic:
        given = auth.password
    if not given or not str(given).strip():
        wanted = "'Authorization: Bearer <token>' or Basic auth with the token as password" if basic else "'Authorization: Bearer <token>'"
        return f"this endpoint needs {wanted} (service.api_token)"
    if not hmac.compare_digest(str(given).strip().encode(), token.encode()):
        return "the API token is wrong; use the one in service.api_token"
    return None


def _needs_token(path: str, endpoint: str | None, public_paths: list[str]) -> bool:
    if path.startswith(ML_BACKEND_PREFIX):  # Label Studio's door checks its own "Basic auth" (app.http.ml_backend)
        return False
    if path.startswith("/v1/") or path == "/v1":
        return endpoint != WEBHOOK_ENDPOINT
    return path not in public_paths


def check_token() -> None:
    """401 unless the request carries the API token (or the path is public, or auth is off)."""
    if not _needs_token(request.path, request.endpoint, services().settings.service.public_paths):
        return
    refusal = token_refusal()
    if refusal is not None:
        raise unauthorized(refusal)


def check_origin() -> None:
    """403 for a browser write from an origin that is not the service's own and not allowed."""
    if request.method in SAFE_METHODS:
        return
    origin = request.headers.get("Origin")
    if origin is None:
        return
    allowed = [value.rstrip("/").lower() for value in services().settings.service.allowed_origins]
    if origin.rstrip("/").lower() in allowed:
        return
    if origin != "null" and urlsplit(origin).netloc.lower() == request.host.lower():
        return
    raise Problem(
        403,
        "Cross-origin write refused",
        f"a browser page at {origin} may not write to this service; list it in service.allowed_origins to allow it",
        type="cross-origin",
        origin=origin,
    )


def install_guards(app: Flask) -> None:
    """Run the checks above before every request of ``app``."""
    for check in (check_token, check_origin):
        app.before_request(check)
