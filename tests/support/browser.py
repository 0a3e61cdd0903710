"""Headless Chromium for the browser tests: Debian's chromium through Playwright, loopback only, Label Studio's login.

Every browser test drives the same browser the same way: :func:`chromium` launches it (a clear failure when the
Debian package is missing), :func:`loopback_only` keeps a page off the network (Label Studio's UI would otherwise
reach for its error-reporting service), and :func:`log_in_to_label_studio` signs a page in as a person does.
Screenshots go to :data:`ARTIFACTS` (``test-artifacts/``, git-ignored).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@contextmanager
def chromium() -> Iterator[tuple[Any, Any]]:
    """(``playwright.sync_api``, a launched headless Chromium), closed afterwards; ``test-artifacts/`` exists."""
    playwright = pytest.importorskip("playwright.sync_api")
    if not CHROMIUM.exists():
        pytest.fail("no /usr/bin/chromium: install Debian's chromium (make system)")
    ARTIFACTS.mkdir(exist_ok=True)
    with playwright.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_FLAGS, headless=True)
        try:
            yield playwright, browser
        finally:
            browser.close()


def loopback_only(page: Any) -> None:
    """Let ``page`` reach 127.0.0.1 only."""
    page.route("**/*", lambda route: route.continue_() if urlparse(route.request.url).hostname == "127.0.0.1" else route.abort())


def log_in_to_label_studio(page: Any, url: str, email: str, password: str) -> None:
    """Sign ``page`` in to the Label Studio at ``url`` through its login form."""
    page.goto(f"{url}/user/login/")
    page.fill("input[name=email]", email)
    page.fill("input[name=password]", password)
    page.click("button[type=submit]")
    page.wait_for_url(lambda current: "/user/login" not in current)
