"""The images Label Studio tasks point at, fetched for juicer's ML backend without opening an SSRF door.

A task's image value is whatever its importer wrote (any project member can plant one). juicer fetches only:

- Label Studio's own media: ``/data/upload/<file>`` and ``/data/local-files/?d=<file>`` (relative, or absolute on
  the configured Label Studio's origin), from the configured base URL with an API token. The path is made
  canonical first (:func:`media_path`: percent-decoding to a fixed point, backslashes, ``//``, ``;`` parameters and
  dot-segments), checked against those two prefixes, and the canonical form is what is sent, so no server on the way
  can read it as anything else (``/data/upload/../../api/...`` never reaches Label Studio's API with its token);
- ``http(s)`` URLs whose host is on the allow-list (``label_studio.image_hosts``), without any token. The host is
  resolved once, refused when any of its addresses is not a global one (loopback, private, link-local, ...) unless
  ``label_studio.image_hosts_private`` allows it, and the connection goes to the checked address (the URL's host
  travels in ``Host`` and as the TLS server name), so a second DNS answer cannot point it elsewhere.

Anything else (another host, ``file:``, ``s3:``, a redirect) is a :class:`~annotation.errors.TaskImageError`
naming the task's URL and the setting to change. Bodies are read up to ``max_bytes`` and no further. Data URIs
and juicer's own items never reach this module (the service reads those itself).
"""

from __future__ import annotations

import ipaddress
import logging
import socket
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Sequence
from urllib.parse import parse_qs, quote, unquote, urlsplit

import httpx

from annotation.errors import TaskImageError

logger = logging.getLogger(__name__)

UPLOAD_PATH = "/data/upload/"
LOCAL_FILES_PATH = "/data/local-files/"
LABEL_STUDIO_PATHS = (UPLOAD_PATH, LOCAL_FILES_PATH)
FETCH_WORKERS = 8  # concurrent downloads: Label Studio serves files from its own process, a few at a time
MAX_DECODES = 3  # percent-decoding rounds to a fixed point; a path still encoded after that is refused

#: ``(host, port) -> addresses``: how an allow-listed host is resolved (tests hand in their own).
Resolver = Callable[[str, int], Sequence[str]]


def _system_resolver(host: str, port: int) -> list[str]:
    return [str(info[4][0]) for info in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)]


def media_path(path: str) -> str:
    """``path`` (as it stands in a URL) in canonical form: decoded, ``/``-separated, no ``;`` parameters, no empty,
    ``.`` or ``..`` segments; ValueError when it climbs above the root, stays encoded after a few rounds of
    decoding, or holds a control character. The caller checks the prefix on this and sends this (re-quoted)."""
    decoded = path
    for _ in range(MAX_DECODES):
        once = unquote(decoded, errors="strict")
        if once == decoded:
            break
        decoded = once
    else:
        if unquote(decoded, errors="strict") != decoded:
            raise ValueError(f"still percent-encoded after {MAX_DECODES} rounds of decoding")
    if any(ord(char) < 0x20 or ord(char) == 0x7F for char in decoded):
        raise ValueError("a control character")
    decoded = decoded.replace("\\", "/")  # some servers and proxies read a backslash as a slash
    segments: list[str] = []
    for segment in decoded.split("/"):
        segment = segment.split(";", 1)[0]  # path parameters: '..;x' is '..' to a servlet container
        if segment in ("", "."):
            continue
        if segment == "..":
            if not segments:
                raise ValueError("a '..' above the root")
            segments.pop()
            continue
        segments.append(segment)
    trailing = "/" if decoded.endswith("/") and segments else ""
    return "/" + "/".join(segments) + trailing


def _quoted(path: str) -> str:
    # every byte but unreserved characters and '/' percent-encoded: the canonical path reads the same everywhere
    return quote(path, safe="/")


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    port = parts.port or {"http": 80, "https": 443}.get(parts.scheme)
    return parts.scheme.lower(), (parts.hostname or "").lower(), port


def _refused_address(address: str) -> str | None:
    """Why juicer may not connect to ``address`` for an allow-listed host, or None for a global address."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])  # an IPv6 zone id is not part of the address
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    for kind in ("loopback", "link_local", "private", "multicast", "unspecified", "reserved"):
        if getattr(ip, f"is_{kind}"):
            return kind.replace("_", "-")
    return None if ip.is_global else "not global"


class TaskImages:
    """Fetches task images from one Label Studio (with ``token``) and the ``allowed_hosts``; one client, pooled."""

    def __init__(
        self,
        label_studio_url: str,
        token: str,
        *,
        allowed_hosts: Sequence[str] = (),
        allow_private_hosts: bool = False,
        max_bytes: int = 32 * 1024 * 1024,
        timeout_s: float = 10,
        transport: httpx.BaseTransport | None = None,
        resolver: Resolver | None = None,
    ) -> None:
        """``allow_private_hosts``: allow-listed hosts may resolve to loopback, private or link-local addresses;
        ``transport`` replaces the network and ``resolver`` the DNS (tests pass an ``httpx.MockTransport`` and a
        function)."""
        self.label_studio_url = label_studio_url.rstrip("/")
        parts = urlsplit(self.label_studio_url)
        self._label_studio_origin = f"{parts.scheme}://{parts.netloc}"
        self.allowed_hosts = frozenset(host.strip().lower() for host in allowed_hosts if host.strip())
        self.allow_private_hosts = allow_private_hosts
        self.max_bytes = max_bytes
        self.timeout_s = timeout_s
        self._token = token
        self._resolver = resolver or _system_resolver
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
        """The absolute URL to GET for a task's image value and the headers to send; TaskImageError if not allowed.

        Label Studio's media come back in canonical form on the configured base URL, with the token; an allow-listed
        host's URL as it is, without one (its address is checked by :meth:`fetch`, which connects)."""
        target, headers, _ = self._plan(url)
        return target, headers

    def _plan(self, url: str) -> tuple[str, dict[str, str], bool]:
        """:meth:`resolve`'s answer and whether the target is an allow-listed host (resolved and checked on fetch)."""
        try:
            return self._checked_plan(url)
        except ValueError as exc:  # urlsplit's: a malformed IPv6 literal or port
            raise TaskImageError(f"image {str(url)[:200]!r}: not a URL juicer can read ({exc})") from exc

    def _checked_plan(self, url: str) -> tuple[str, dict[str, str], bool]:
        if not isinstance(url, str) or not url.strip():
            raise TaskImageError("the task has no image URL")
        url = url.strip()
        if any(ord(char) < 0x20 or ord(char) == 0x7F for char in url):
            raise TaskImageError(f"image {url[:200]!r}: a control character in the URL")
        parts = urlsplit(url)
        if not parts.scheme and not parts.netloc and url.startswith("/"):
            return self._media(url, parts.path, parts.query, self.label_studio_url), self._auth(), False
        scheme, host, _ = _origin(url)
        if scheme not in ("http", "https") or not host:
            raise TaskImageError(
                f"image {url[:200]!r}: juicer reads Label Studio's /data/upload/ and /data/local-files/ paths, http(s) "
                "URLs of allowed hosts, data: URIs and its own items; not this"
            )
        if _origin(url) == _origin(self.label_studio_url):
            return self._media(url, parts.path, parts.query, self._label_studio_origin), self._auth(), False
        if host in self.allowed_hosts:
            return url, {}, True
        raise TaskImageError(
            f"image {url[:200]!r}: host {host!r} is not allowed; add it to label_studio.image_hosts "
            "(JUICER_LABEL_STUDIO__IMAGE_HOSTS) if juicer may fetch from it"
        )

    def _media(self, url: str, path: str, query: str, base: str) -> str:
        """``base`` + the canonical form of one of Label Studio's media paths; TaskImageError for any other path."""
        try:
            canonical = media_path(path)
            if canonical == LOCAL_FILES_PATH:
                names = parse_qs(query, keep_blank_values=True).get("d", [])
                name = media_path("/" + names[0]).lstrip("/") if len(names) == 1 else ""
                if name and not name.endswith("/"):
                    return f"{base}{LOCAL_FILES_PATH}?d={_quoted(name)}"
            elif canonical.startswith(UPLOAD_PATH) and len(canonical) > len(UPLOAD_PATH) and not canonical.endswith("/"):
                return base + _quoted(canonical)
        except (ValueError, UnicodeError) as exc:
            raise TaskImageError(f"image {url[:200]!r}: not one of Label Studio's media paths ({exc})") from exc
        raise TaskImageError(
            f"image {url[:200]!r}: on Label Studio juicer reads only files under /data/upload/ and "
            "/data/local-files/?d=<file>; this path is not one"
        )

    def _auth(self) -> dict[str, str]:
        return {"Authorization": f"Token {self._token}"} if self._token else {}

    def _pinned(self, url: str, target: str) -> tuple[str, dict[str, str], dict[str, str]]:
        """``target`` on the address its host resolves to (once, checked), the ``Host`` header and TLS server name
        that keep the request the same, or TaskImageError when the host resolves to an address juicer avoids."""
        parsed = httpx.URL(target)
        host = parsed.raw_host.decode("ascii")  # IDNA-encoded: what DNS and TLS see
        port = parsed.port or (443 if parsed.scheme == "https" else 80)
        try:
            addresses = list(self._resolver(host, port))
        except (OSError, UnicodeError) as exc:
            raise TaskImageError(f"image {url[:200]!r}: host {host!r} does not resolve ({exc})", retryable=True) from exc
        if not addresses:
            raise TaskImageError(f"image {url[:200]!r}: host {host!r} has no address", retryable=True)
        if not self.allow_private_hosts:
            for address in addresses:
                why = _refused_address(address)
                if why is not None:
                    raise TaskImageError(
                        f"image {url[:200]!r}: host {host!r} resolves to {address} ({why}); juicer fetches allow-listed "
                        "hosts on public addresses only: set label_studio.image_hosts_private "
                        "(JUICER_LABEL_STUDIO__IMAGE_HOSTS_PRIVATE=true) if this host is meant to be on your network"
                    )
        address = addresses[0].split("%", 1)[0]
        extensions = {"sni_hostname": host} if parsed.scheme == "https" else {}
        return str(parsed.copy_with(host=address)), {"Host": parsed.netloc.decode("ascii")}, extensions

    def fetch(self, url: str) -> bytes:
        """The encoded bytes of a task's image (at most ``max_bytes``); TaskImageError saying why not."""
        target, headers, allow_listed = self._plan(url)
        extensions: dict[str, str] = {}
        if allow_listed:
            target, headers, extensions = self._pinned(url, target)
        try:
            with self._http.stream("GET", target, headers=headers, extensions=extensions) as response:
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
