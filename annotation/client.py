"""One connection to one Label Studio: the HTTP client, the SDK on top of it, and the error mapping.

Every call has a timeout and none is retried here (the caller owns retry policy, guided by
:attr:`~annotation.errors.AnnotationError.retryable`); every SDK and ``httpx`` failure becomes an
:class:`~annotation.errors.AnnotationError` chained ``from`` its cause, with a message that says what to do.
"""

from __future__ import annotations

import json
from contextlib import contextmanager
from typing import Any, Iterator, Mapping

import httpx
from label_studio_sdk import LabelStudio
from label_studio_sdk.core.api_error import ApiError

from annotation.errors import AnnotationError, LabelStudioAuthError, LabelStudioRejected, LabelStudioUnavailable

PAGE_SIZE = 1000
BULK_TIMEOUT_FACTOR = 6  # bulk calls (import, prediction listing, whole-project export) get 6x the ordinary timeout


def error_detail(body: Any) -> str:
    """The useful part of a Label Studio error body (not the headers the SDK's str() dumps)."""
    if isinstance(body, Mapping):
        parts = [str(body.get("detail") or "")]
        if body.get("validation_errors"):
            parts.append(json.dumps(body["validation_errors"]))
        return " ".join(p for p in parts if p) or json.dumps(body)[:500]
    return str(body)[:500]


def status_error(status: int | None, doing: str, detail: str, url: str) -> AnnotationError:
    """The AnnotationError for an HTTP status: 401/403 auth, 5xx/408/429 unavailable (retryable), other 4xx rejected."""
    if status in (401, 403):
        return LabelStudioAuthError(
            f"{doing}: Label Studio at {url} refused the API token ({status}: {detail}); check label_studio.token "
            "(a legacy token: the server must have been first started with --enable-legacy-api-token)",
            status=status,
        )
    if status is None or status >= 500 or status in (408, 429):
        return LabelStudioUnavailable(
            f"{doing}: Label Studio at {url} failed ({status}: {detail}); retry later, and read its log if it persists",
            status=status,
        )
    return LabelStudioRejected(f"{doing}: Label Studio at {url} rejected the request ({status}: {detail})", status=status)


def answers_up(http: httpx.Client) -> bool:
    """True when Label Studio behind ``http`` answers ``GET /health`` with ``{"status": "UP"}``; never raises."""
    try:
        response = http.get("/health")
        return response.status_code == 200 and response.json().get("status") == "UP"
    except (httpx.HTTPError, ValueError):
        return False


class LabelStudioClient:
    """The HTTP connection (``httpx``) and the SDK over it, for one server and one API token."""

    def __init__(self, url: str, token: str, *, timeout_s: float = 10, transport: httpx.BaseTransport | None = None) -> None:
        """``transport`` replaces the network (tests pass an ``httpx.MockTransport``)."""
        self.url = url.rstrip("/")
        self.timeout_s = timeout_s
        self._token = token
        self.http = httpx.Client(base_url=self.url, timeout=httpx.Timeout(timeout_s), follow_redirects=False, transport=transport)
        self.sdk = LabelStudio(base_url=self.url, api_key=token, httpx_client=self.http, timeout=timeout_s)
        # No SDK retries with sleeps: fail fast, the caller decides (AnnotationError.retryable).
        self.opts: dict[str, Any] = {"max_retries": 0, "timeout_in_seconds": timeout_s}
        self.bulk_opts: dict[str, Any] = {"max_retries": 0, "timeout_in_seconds": timeout_s * BULK_TIMEOUT_FACTOR}

    def close(self) -> None:
        """Close the HTTP connections."""
        self.http.close()

    @contextmanager
    def errors(self, doing: str) -> Iterator[None]:
        """Turn SDK and transport failures inside the block into AnnotationErrors saying what was being done."""
        try:
            yield
        except AnnotationError:
            raise
        except ApiError as exc:
            raise status_error(exc.status_code, doing, error_detail(exc.body), self.url) from exc
        except httpx.TimeoutException as exc:
            raise LabelStudioUnavailable(
                f"{doing}: Label Studio at {self.url} did not answer within {self.timeout_s:g} s; check it runs "
                "(`juicer labelstudio status`) and retry"
            ) from exc
        except httpx.TransportError as exc:
            raise LabelStudioUnavailable(
                f"{doing}: cannot reach Label Studio at {self.url} ({type(exc).__name__}: {exc}); start it with "
                "`juicer labelstudio start` and retry"
            ) from exc

    def request(self, method: str, path: str, doing: str, **kwargs: Any) -> httpx.Response:
        """A raw call with the token (for endpoints the SDK lacks or shapes differently than the UI)."""
        headers = {"Authorization": f"Token {self._token}", **kwargs.pop("headers", {})}
        with self.errors(doing):
            response = self.http.request(method, path, headers=headers, **kwargs)
        if response.status_code >= 400:
            try:
                body: Any = response.json()
            except ValueError:
                body = response.text
            raise status_error(response.status_code, doing, error_detail(body), self.url)
        return response

    def health(self) -> bool:
        """True when the server answers ``/health`` with UP within the timeout; never raises."""
        return answers_up(self.http)
