"""Checks every request passes before a view runs: the token, the origin of browser writes, JSON depth.

Cheap before expensive, and in this order (:func:`install_guards`):

1. **Token.** ``/v1/*`` needs ``Authorization: Bearer <token>`` (:func:`app.secrets.api_token`), except the
   Label Studio webhook, which carries its own secret; paths outside ``/v1`` are open only when listed in
   ``service.public_paths`` (health, readiness, metrics and the report pages by default).
2. **Origin.** A write (any method but GET, HEAD, OPTIONS) carrying an ``Origin`` header that is neither the
   service's own host nor listed in ``service.allowed_origins`` is refused (403): a web page a user happens to
   open cannot make their browser POST to a service on their machine.
3. **JSON depth.** A JSON body nested deeper than ``service.max_json_depth`` is refused (400) before it is
   parsed (Python's parser recurses, so 5,000 levels would otherwise end in a ``RecursionError``).
"""

from __future__ import annotations

import hmac
from urllib.parse import urlsplit

import numpy as np
from flask import Flask, current_app, request

from app.problems import Problem, unauthorized

WEBHOOK_ENDPOINT = "api.label_studio_webhook"
ML_BACKEND_PREFIX = "/label-studio-ml"
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")
_CHUNK = 1 << 18  # bytes scanned per numpy pass: bounded memory on a 32 MiB body
_OPEN = (ord("["), ord("{"))
_CLOSE = (ord("]"), ord("}"))


def json_depth_exceeds(body: bytes, max_depth: int) -> bool:
    """Whether the brackets of ``body`` (outside JSON strings) nest deeper than ``max_depth``; never parses.

    A body with at most ``max_depth`` opening brackets in all cannot be too deep (one ``bytes.count``, the
    usual case: images are base64 strings). Otherwise the body is scanned in chunks with numpy: a quote
    preceded by an odd run of backslashes is escaped; brackets between unescaped quotes do not count.
    """
    if body.count(b"[") + body.count(b"{") <= max_depth:
        return False
    depth, in_string, backslashes = 0, 0, 0
    for start in range(0, len(body), _CHUNK):
        chunk = np.frombuffer(body, dtype=np.uint8, count=min(_CHUNK, len(body) - start), offset=start)
        index = np.arange(len(chunk), dtype=np.int64)
        is_backslash = chunk == 92
        last_other = np.maximum.accumulate(np.where(is_backslash, -1, index))
        run = index - last_other  # backslashes ending at each position (0 where it is no backslash)
        run = np.where(last_other < 0, run + backslashes, run)
        before = np.concatenate(([backslashes], run[:-1]))
        quote = (chunk == 34) & (before % 2 == 0)
        inside = (np.cumsum(quote) + in_string) % 2
        step = np.isin(chunk, _OPEN).astype(np.int64) - np.isin(chunk, _CLOSE)
        levels = depth + np.cumsum(np.where(inside == 0, step, 0))
        if levels.max(initial=0) > max_depth:
            return True
        depth, in_string, backslashes = int(levels[-1]), int(inside[-1]), int(run[-1])
    return False


def _services():
    return current_app.extensions["juicer"]


def _needs_token(path: str, endpoint: str | None, public_paths: list[str]) -> bool:
    if path.startswith(ML_BACKEND_PREFIX):  # Label Studio's door checks its own "Basic auth" (app.ml_backend)
        return False
    if path.startswith("/v1/") or path == "/v1":
        return endpoint != WEBHOOK_ENDPOINT
    return path not in public_paths


def check_token() -> None:
    """401 unless the request carries the API token (or the path is public, or auth is off)."""
    from app.secrets import api_token

    settings = _services().settings
    token = api_token(settings)
    if token is None or not _needs_token(request.path, request.endpoint, settings.service.public_paths):
        return
    header = request.headers.get("Authorization", "")
    scheme, _, given = header.partition(" ")
    if scheme.lower() != "bearer" or not given.strip():
        raise unauthorized("this endpoint needs 'Authorization: Bearer <token>' (service.api_token)")
    if not hmac.compare_digest(given.strip().encode(), token.encode()):
        raise unauthorized("the API token is wrong; use the one in service.api_token")


def check_origin() -> None:
    """403 for a browser write from an origin that is not the service's own and not allowed."""
    if request.method in SAFE_METHODS:
        return
    origin = request.headers.get("Origin")
    if origin is None:
        return
    allowed = [value.rstrip("/").lower() for value in _services().settings.service.allowed_origins]
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


def check_json_depth() -> None:
    """400 for a JSON body nested deeper than ``service.max_json_depth`` (before anything parses it)."""
    if not request.is_json:
        return
    limit = _services().settings.service.max_json_depth
    if json_depth_exceeds(request.get_data(cache=True), limit):
        raise Problem(
            400,
            "JSON too deep",
            f"the JSON body is nested deeper than {limit} levels; juicer's bodies are a few levels deep",
            type="json-too-deep",
            max_depth=limit,
        )


def install_guards(app: Flask) -> None:
    """Run the checks above before every request of ``app``."""
    for check in (check_token, check_origin, check_json_depth):
        app.before_request(check)
