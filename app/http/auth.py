"""Checks every request passes before a view runs: the Host header, the token and the origin of browser writes.

Cheap before expensive, and in this order (:func:`install_guards`):

0. **Host.** A ``Host`` header naming none of :func:`allowed_hosts` (``service.allowed_hosts``; by default the
   names the service is really reached by) is refused (400): a page whose DNS name is rebound to 127.0.0.1 sends
   its own name as the Host, so it cannot read a loopback-only juicer through a user's browser.
1. **Token.** Every path needs juicer's API token (:func:`app.core.secrets.api_token`) except those listed in
   ``service.public_paths`` (by default ``/healthz``, ``/readyz`` and ``/openapi.json``: nothing of a user's images,
   labels or results), the Label Studio webhook (its own secret) and the ML-backend door (its own check, the same
   :func:`token_refusal`). The report, the gallery and ``/metrics`` show a user's data, so they are not public.
   A write needs ``Authorization: Bearer <token>``. A read (GET, HEAD) also takes HTTP Basic auth with the token as
   the password and any user name, and a 401 outside ``/v1`` carries ``WWW-Authenticate: Basic realm="juicer"``: a
   person opening ``/report`` gets the browser's own prompt, and its links (``/gallery``, ``/v1/forecast``) then
   open too; Prometheus (``authorization: credentials_file``), curl (``-u :TOKEN``) and Playwright send either.
   Why Basic rather than a login page and a cookie: no session state, no form, no cookie to steal, and nothing
   new to guard against CSRF. A browser does attach a remembered Basic credential to requests other sites' pages
   make, so Basic opens reads only: their answers cannot be read across origins (and check 0 stops a rebound
   name), while a write needs the Bearer header, which a browser never adds by itself (Label Studio's door, which
   can only send Basic, is covered by check 2). The token is never read from a query string, where it would end
   up in logs, history and ``Referer`` headers. Basic, like Bearer, is clear text: beyond loopback, put TLS in front.
2. **Origin.** A write (any method but GET, HEAD, OPTIONS) carrying an ``Origin`` header that is neither the
   service's own host nor listed in ``service.allowed_origins`` is refused (403): a web page a user happens to
   open cannot make their browser POST to a service on their machine.

The JSON depth limit is enforced while a body is parsed (:mod:`app.http.jsonbody`), never by reading it whole first.
"""

from __future__ import annotations

import hmac
import ipaddress
import re
from urllib.parse import urlsplit

from flask import Flask, request

from app.http.context import services
from app.http.problems import BASIC_CHALLENGE, BEARER_CHALLENGE, Problem, unauthorized
from config import Settings

WEBHOOK_ENDPOINT = "api.label_studio_webhook"
ML_BACKEND_PREFIX = "/label-studio-ml"
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
WILDCARD_ADDRESSES = ("0.0.0.0", "::", "")
_HOST = re.compile(r"(?P<name>\[[0-9A-Fa-f:.]+\]|[^:\[\]@/\\\s]+)(?::\d{1,5})?")


def _host_name(value: str) -> str | None:
    """The name in a Host header (``name[:port]`` or ``[v6][:port]``), lower case, no trailing dot; None if malformed."""
    match = _HOST.fullmatch(value.strip())
    return _bind_name(match.group("name")) if match else None


def _bind_name(host: str) -> str:
    """The name a bind address or URL host appears as in a Host header."""
    try:
        return str(ipaddress.ip_address(host.strip("[]")))
    except ValueError:
        return host.rstrip(".").lower()


def allowed_hosts(settings: Settings) -> frozenset[str] | None:
    """The Host names the service answers (None: any): ``service.allowed_hosts``, else the bind address,
    ``public_url``'s host, and the loopback names when the service listens on loopback or on every interface."""
    service = settings.service
    if service.allowed_hosts is not None:
        names = {value.strip() for value in service.allowed_hosts if value.strip()}
        return None if "*" in names else frozenset(_bind_name(name) for name in names)
    names = {_bind_name(service.host)} if service.host not in WILDCARD_ADDRESSES else set(LOOPBACK_NAMES)
    if service.public_url and urlsplit(service.public_url).hostname:
        names.add(_bind_name(str(urlsplit(service.public_url).hostname)))
    try:
        if ipaddress.ip_address(service.host).is_loopback:
            names.update(LOOPBACK_NAMES)
    except ValueError:
        if service.host == "localhost":
            names.update(LOOPBACK_NAMES)
    return frozenset(names)


def token_refusal(*, basic: bool = False) -> str | None:
    """Why the request lacks juicer's API token, or None when it carries it (or the API is not token-protected).

    ``Authorization: Bearer <token>``; with ``basic``, also Basic auth with the token as the password (any user
    name: a browser's prompt on a read, Label Studio's "Basic auth" for an ML backend). Only the header counts,
    never the query string. The one token check of both HTTP doors.
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
        return f"this endpoint needs {wanted} (service.api_token; unset, juicer generated it into <data_dir>/secrets/api-token)"
    if not hmac.compare_digest(str(given).strip().encode(), token.encode()):
        return "the API token is wrong; use the one in service.api_token (or <data_dir>/secrets/api-token)"
    return None


def _in_api(path: str) -> bool:
    return path.startswith("/v1/") or path == "/v1"


def _needs_token(path: str, endpoint: str | None, public_paths: list[str]) -> bool:
    if path.startswith(ML_BACKEND_PREFIX):  # Label Studio's door checks its own "Basic auth" (app.http.ml_backend)
        return False
    if _in_api(path):
        return endpoint != WEBHOOK_ENDPOINT
    return path not in public_paths


def check_host() -> None:
    """400 unless the request's Host header names this service (:func:`allowed_hosts`)."""
    allowed = allowed_hosts(services().settings)
    if allowed is None:
        return
    given = request.headers.get("Host", "")
    if _host_name(given) in allowed:
        return
    raise Problem(
        400,
        "Host not allowed",
        f"this service does not answer to the host {given[:200]!r}; add its name to service.allowed_hosts "
        "(JUICER_SERVICE__ALLOWED_HOSTS) if clients really reach it by that name",
        type="host-not-allowed",
        host=given[:200],
    )


def check_token() -> None:
    """401 unless the request carries the API token (or the path is public, or auth is off): Bearer, or on a read
    also Basic; the challenge is Basic outside ``/v1`` (the pages: the browser prompts) and Bearer on the API."""
    if not _needs_token(request.path, request.endpoint, services().settings.service.public_paths):
        return
    refusal = token_refusal(basic=request.method in SAFE_METHODS)
    if refusal is not None:
        raise unauthorized(refusal, BEARER_CHALLENGE if _in_api(request.path) else BASIC_CHALLENGE)


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
    for check in (check_host, check_token, check_origin):
        app.before_request(check)
