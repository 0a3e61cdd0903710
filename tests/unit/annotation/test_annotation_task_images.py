"""Task images: Label Studio's own files with a token, allow-listed hosts without one, nothing else (no SSRF)."""

from __future__ import annotations

import socket
from urllib.parse import unquote

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from annotation.errors import TaskImageError
from annotation.task_images import TaskImages

LS = "http://127.0.0.1:8080"


def images(handler=None, **kwargs) -> TaskImages:
    transport = httpx.MockTransport(handler or (lambda request: httpx.Response(200, content=b"img")))
    kwargs.setdefault("resolver", lambda host, port: ["93.184.216.34"])  # a public address, no DNS in tests
    return TaskImages(LS, "tok", allowed_hosts=["images.example.org"], transport=transport, **kwargs)


def no_network(request):
    """A transport for URLs that must be refused before any request: reaching it fails the test."""
    raise AssertionError(f"fetched {request.url}")


@pytest.mark.parametrize(
    "url, target, token",
    [
        ("/data/upload/3/a.png", f"{LS}/data/upload/3/a.png", True),
        ("/data/local-files/?d=img/a.jpg", f"{LS}/data/local-files/?d=img/a.jpg", True),
        (f"{LS}/data/upload/3/a.png", f"{LS}/data/upload/3/a.png", True),
        ("https://images.example.org/a.jpg", "https://images.example.org/a.jpg", False),
    ],
)
def test_allowed_urls_resolve_with_the_token_only_for_label_studio(url, target, token):
    resolved, headers = images().resolve(url)
    assert resolved == target
    assert ("Authorization" in headers) is token


@pytest.mark.parametrize(
    "url",
    [
        "http://169.254.169.254/latest/meta-data",
        "http://localhost:8000/v1/models",
        f"{LS}/api/projects",  # Label Studio's API is not an image
        "file:///etc/passwd",
        "s3://bucket/a.png",
        "https://images.example.org.evil.test/a.jpg",
        "",
    ],
)
def test_everything_else_is_refused_before_any_request(url):
    with pytest.raises(TaskImageError):
        images(no_network).fetch(url)


def test_redirects_are_not_followed_and_sizes_are_capped():
    redirect = images(lambda r: httpx.Response(302, headers={"Location": "http://169.254.169.254/"}))
    with pytest.raises(TaskImageError, match="redirect"):
        redirect.fetch("/data/upload/1/a.png")
    big = images(lambda r: httpx.Response(200, content=b"x" * 2000), max_bytes=1000)
    with pytest.raises(TaskImageError, match="limit"):
        big.fetch("/data/upload/1/a.png")


def test_fetch_many_keeps_order_and_reports_each_failure():
    def serve(request):
        return httpx.Response(200, content=request.url.path.encode()) if "ok" in request.url.path else httpx.Response(503)

    got = images(serve).fetch_many([f"/data/upload/1/ok{i}.png" for i in range(5)] + ["/data/upload/1/bad.png"])
    assert got[:5] == [f"/data/upload/1/ok{i}.png".encode() for i in range(5)]
    assert isinstance(got[5], TaskImageError) and got[5].retryable


# -- the path Label Studio's token goes to: canonical, inside the media prefixes, whatever the encoding ----------

MEDIA_SEGMENTS = st.sampled_from(
    ["..", ".", "", "%2e%2e", "%2E.", ".%2e", "%252e%252e", "%25252e%25252e", "%2525252e%2525252e", "..;", "..;x=1",
     "..\\..", "%5c..", "..%5c..", "%2f..", "..%2f", "%252f", "%2F", ";", ";a", "api", "current-user", "whoami",
     "data", "upload", "local-files", "1", "a.png", "%00", "%0a", "%20", "%", "%zz", "%c3%a9", "%ff", "~", "é"]
)  # fmt: skip


def _decoded_segments(raw_path: str, rounds: int) -> list[str]:
    """The segments a server that decodes ``rounds`` times and reads backslashes and ';' loosely would see."""
    path = raw_path
    for _ in range(rounds):
        path = unquote(path)
    return [segment.split(";", 1)[0] for segment in path.replace("\\", "/").split("/")]


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    prefix=st.sampled_from(["/data/upload/", "/data/local-files/", "/data/", "/", f"{LS}/data/upload/", "/data/upload"]),
    segments=st.lists(MEDIA_SEGMENTS, max_size=8),
    query=st.sampled_from(["", "?d=images/a.png", "?d=../../secrets/api-token", "?d=%2e%2e/x", "?d=a&d=b"]),
)
def test_the_token_only_ever_goes_to_a_canonical_media_path(prefix, segments, query):
    sent: list[httpx.Request] = []

    def record(request):
        sent.append(request)
        return httpx.Response(200, content=b"img")

    url = prefix + "/".join(segments) + query
    try:
        images(record).fetch(url)
    except TaskImageError:
        pass
    for request in sent:
        assert request.headers.get("Authorization") == "Token tok" and request.url.host == "127.0.0.1"
        raw_path = request.url.raw_path.decode("ascii").split("?", 1)[0]
        for rounds in (0, 1, 2, 3):  # however many times a server decodes, it reads the same media path
            seen = _decoded_segments(raw_path, rounds)
            assert seen[:3] in (["", "data", "upload"], ["", "data", "local-files"]), (url, raw_path)
            assert not {".", ".."} & set(seen) and "" not in seen[1:-1], (url, raw_path)
        if raw_path == "/data/local-files/":
            name = request.url.params["d"]
            assert name and not {".", ".."} & set(name.split("/")) and not name.startswith("/"), (url, name)


@pytest.mark.parametrize(
    "url",
    [
        "/data/upload/../../api/current-user/whoami",  # issue 21's hole 5, as planted
        "/data/upload/%2e%2e/%2e%2e/api/current-user/whoami",
        "/data/upload/%2E%2E/%2E%2E/api/current-user/whoami",
        "/data/upload/%252e%252e/%252e%252e/api/current-user/whoami",  # double encoding
        "/data/upload/..%2f..%2fapi/current-user/whoami",
        "/data/upload/..%252f..%252fapi/current-user/whoami",
        "/data/upload/..\\..\\api/current-user/whoami",
        "/data/upload/..%5c..%5capi/current-user/whoami",
        "/data/upload/..;/..;/api/current-user/whoami",
        "/data/upload/./../../api/projects",
        "/data/upload/1/../../../api/projects",
        "/data/local-files/../../api/projects?d=x",
        "/data/local-files/?d=../../secrets/api-token",
        "/data/local-files/?d=",
        "/data/local-files/",
        "/data/upload/",
        f"{LS}/data/upload/../../api/current-user/whoami",
        f"{LS}/data/upload/%2e%2e/%2e%2e/api/current-user/whoami",
        "//evil.test/data/upload/1/a.png",
        "/\\evil.test/data/upload/1/a.png",
        "/data/upload/1/a\r\n.png",
        "/data/upload/%00/a.png",
        "http://[::1",  # malformed URLs are refused, not a crash
        "http://images.example.org:99999/a.jpg",
        "http://images.example.org:abc/a.jpg",
        "/data/upload/%ff.png",
    ],
)
def test_paths_that_leave_the_media_prefixes_are_refused_before_any_request(url):
    with pytest.raises(TaskImageError):
        images(no_network).fetch(url)


@pytest.mark.parametrize(
    "url, target",
    [
        ("/data/upload//3/./a.png", f"{LS}/data/upload/3/a.png"),
        ("/data/upload/3/x/../a.png", f"{LS}/data/upload/3/a.png"),
        ("/data/upload/3/a%20b.png", f"{LS}/data/upload/3/a%20b.png"),
        ("/data/local-files/?d=images%2Fa.png", f"{LS}/data/local-files/?d=images/a.png"),
        ("/data/local-files/?d=images/../images/a.png", f"{LS}/data/local-files/?d=images/a.png"),
    ],
)
def test_media_paths_are_sent_in_canonical_form(url, target):
    assert images().resolve(url) == (target, {"Authorization": "Token tok"})


# -- allow-listed hosts: public addresses only, resolved once, connected to as checked --------------------------


@pytest.mark.parametrize(
    "addresses",
    [["127.0.0.1"], ["10.0.0.7"], ["192.168.1.2"], ["172.16.0.1"], ["169.254.169.254"], ["100.64.0.1"], ["::1"],
     ["::ffff:127.0.0.1"], ["fd00::1"], ["fe80::1"], ["0.0.0.0"], ["93.184.216.34", "127.0.0.1"]],
)  # fmt: skip
def test_an_allow_listed_host_on_a_private_address_is_refused_unless_allowed(addresses):
    with pytest.raises(TaskImageError, match="image_hosts_private"):
        images(no_network, resolver=lambda host, port: addresses).fetch("https://images.example.org/a.jpg")
    allowed = images(resolver=lambda host, port: addresses, allow_private_hosts=True)
    assert allowed.fetch("https://images.example.org/a.jpg") == b"img"


def test_an_allow_listed_host_is_resolved_once_and_connected_to_at_the_checked_address():
    answers = iter([["93.184.216.34"], ["127.0.0.1"]])  # a rebinding name: public first, loopback next
    sent: list[httpx.Request] = []

    def record(request):
        sent.append(request)
        return httpx.Response(200, content=b"img")

    fetcher = images(record, resolver=lambda host, port: next(answers))
    assert fetcher.fetch("https://images.example.org:8443/a.jpg?size=2") == b"img"
    (request,) = sent
    assert str(request.url) == "https://93.184.216.34:8443/a.jpg?size=2"
    assert request.headers["Host"] == "images.example.org:8443" and "Authorization" not in request.headers
    assert request.extensions["sni_hostname"] == "images.example.org"  # the certificate is checked for the name


def test_an_allow_listed_host_that_does_not_resolve_is_a_retryable_error():
    def fail(host, port):
        raise socket.gaierror("no such host")

    with pytest.raises(TaskImageError, match="does not resolve") as caught:
        images(resolver=fail).fetch("https://images.example.org/a.jpg")
    assert caught.value.retryable
