"""The images Label Studio tasks point at, fetched for juicer's ML backend without opening an SSRF door.

A task's image value is whatever its importer wrote. juicer fetches only:

- Label Studio's own files: ``/data/upload/...`` and ``/data/local-files/?d=...`` (relative, or absolute on the
  configured Label Studio's origin), from the configured base URL with an API token;
- ``http(s)`` URLs whose host is on the allow-list (``label_studio.image_hosts``), without any token.

Anything else (another host, ``file:``, ``s3:``, a redirect) is a :class:`~annotation.errors.TaskImageError`
naming the task's URL and the setting to change. Bodies are read up to ``max_bytes`` and no further. Data URIs
and juicer's own items never reach this module (the service reads those itself).
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Sequence
from urllib.parse import urljoin, urlsplit

import httpx

from annotation.errors import TaskImageError

logger = logging.getLogger(__name__)

LABEL_STUDIO_PATHS = ("/data/upload/", "/data/local-files/")
FETCH_WORKERS = 8  # concurrent downloads: Label Studio serves files from its own process, a few at a time


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    port = parts.port or {"http": 80, "https": 443}.get(parts.scheme)
    return parts.scheme.lower(), (parts.hostname or "").lower(), port


class TaskImages:
    """Fetches task images from one Label Studio (with ``token``) and the ``allowed_hosts``; one client, pooled."""

    def __init__(
        self,
        label_studio_url: str,
        token: str,
        *,
        allowed_hosts: Sequence[str] = (),
        max_bytes: int = 32 * 1024 * 1024,
        timeout_s: float = 10,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        """``transport`` replaces the network (tests pass an ``httpx.MockTransport``)."""
        self.label_studio_url = label_studio_url.rstrip("/")
        self.allowed_hosts = frozenset(host.strip().lower() for host in allowed_hosts if host.strip())
        self.max_bytes = max_bytes
        self.timeout_s = timeout_s
        self._token = token
        limits = httpx.Limits(max_connections=FETCH_WORKERS, max_keepalive_connections=FETCH_WORKERS)
        self._http = httpx.Client(timeout=timeout_s, follow_redirects=False, transport=transport, limits=limits)

    def close(self) -> None:
        """Close the HTTP connections."""
        self._http.close()

    def __enter__(self) -> "TaskImages":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def resolve(self, url: str) -> tuple[str, dict[str, str]]:
        """The absolute URL to GET for a task's image value and the headers to send; TaskImageError if not allowed."""
        if not isinstance(url, str) or not url.strip():
            raise TaskImageError("the task has no image URL")
        url = url.strip()
        if url.startswith(LABEL_STUDIO_PATHS):
            return urljoin(self.label_studio_url + "/", url.lstrip("/")), self._auth()
        scheme, host, _ = _origin(url)
        if scheme not in ("http", "https") or not host:
            raise TaskImageError(
                f"image {url[:200]!r}: juicer reads Label Studio's /data/upload/ and /data/local-files/ paths, http(s) "
                "URLs of allowed hosts, data: URIs and its own items; not this"
            )
        if _origin(url) == _origin(self.label_studio_url):
            if urlsplit(url).path.startswith(LABEL_STUDIO_PATHS):
                return url, self._auth()
        if host in self.allowed_hosts:
            return url, {}
        raise TaskImageError(
            f"image {url[:200]!r}: host {host!r} is not allowed; add it to label_studio.image_hosts "
            "(JUICER_LABEL_STUDIO__IMAGE_HOSTS) if juicer may fetch from it"
        )

    def _auth(self) -> dict[str, str]:
        return {"Authorization": f"Token {self._token}"} if self._token else {}

    def fetch(self, url: str) -> bytes:
        """The encoded bytes of a task's image (at most ``max_bytes``); TaskImageError saying why not."""
        target, headers = self.resolve(url)
        try:
            with self._http.stream("GET", target, headers=headers) as response:
                if response.status_code != 200:
                    retryable = response.status_code >= 500 or response.status_code in (408, 429)
                    hint = " (a redirect: juicer does not follow them)" if 300 <= response.status_code < 400 else ""
                    raise TaskImageError(
                        f"image {url[:200]!r}: {target[:200]} answered {response.status_code}{hint}",
                        retryable=retryable, status=response.status_code,
                    )  # fmt: skip
                declared = response.headers.get("Content-Length")
                if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
                    raise TaskImageError(f"image {url[:200]!r} is {declared} bytes; the limit is {self.max_bytes}", status=413)
                chunks, size = [], 0
                for chunk in response.iter_bytes():
                    size += len(chunk)
                    if size > self.max_bytes:
                        raise TaskImageError(f"image {url[:200]!r} is over the limit of {self.max_bytes} bytes", status=413)
                    chunks.append(chunk)
        except httpx.TimeoutException as exc:
            raise TaskImageError(f"image {url[:200]!r}: no answer within {self.timeout_s:g} s", retryable=True) from exc
        except httpx.HTTPError as exc:
            raise TaskImageError(f"image {url[:200]!r}: {type(exc).__name__}: {exc}", retryable=True) from exc
        return b"".join(chunks)

    def fetch_many(self, urls: Sequence[str]) -> list[bytes | TaskImageError]:
        """Each URL's bytes or the TaskImageError that stopped it, in order; a few downloads at a time."""

        def one(url: str) -> bytes | TaskImageError:
            try:
                return self.fetch(url)
            except TaskImageError as exc:
                return exc

        if len(urls) <= 1:
            return [one(url) for url in urls]
        with ThreadPoolExecutor(max_workers=FETCH_WORKERS, thread_name_prefix="juicer-task-images") as pool:
            return list(pool.map(one, urls))
