"""Task images: Label Studio's own files with a token, allow-listed hosts without one, nothing else (no SSRF)."""

from __future__ import annotations

import httpx
import pytest

from annotation.errors import TaskImageError
from annotation.task_images import TaskImages

LS = "http://127.0.0.1:8080"


def images(handler=None, **kwargs) -> TaskImages:
    transport = httpx.MockTransport(handler or (lambda request: httpx.Response(200, content=b"img")))
    return TaskImages(LS, "tok", allowed_hosts=["images.example.org"], transport=transport, **kwargs)


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
    def no_network(request):
        raise AssertionError(f"fetched {request.url}")

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
