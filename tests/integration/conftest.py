"""Shared fixtures for integration tests: ONE real Label Studio server per test session.

``label_studio`` (session scope) starts Label Studio 1.23.2 from ``.venv-ls`` on a free 127.0.0.1 port with a
fresh data folder under pytest's tmp dir, and stops it when the session ends. It yields a
:class:`LabelStudioInstance`:

- ``url``, ``token`` (the admin's API token), ``username`` (an email) and ``password`` (to log in a browser);
- ``files_root``: the folder Label Studio serves images from; ``images`` maps ``chelsea``/``coffee``/
  ``astronaut`` to real JPEGs (scikit-image's photos) there, as paths relative to ``files_root``;
- ``desk(token=None, timeout_s=10)``: an :class:`simulate.annotator.AnnotatorDesk` on it (admin by default);
- ``invite(email)``: a second annotator's API token (signed up through the invite link);
- ``project_title(prefix)``: a title no other test uses (tests share the server, so each makes its own project);
- ``launcher``: the :class:`annotation.launcher.LabelStudioLauncher` (``stop()``/``start()`` restart it on the same data).

``webhook_receiver`` (function scope): a tiny ``http.server`` on 127.0.0.1 that records every POST
(headers, JSON body) and answers 200 at once; ``wait_for(predicate, timeout_s)`` polls its records.

Set ``JUICER_TEST_LS_VENV`` to use another Label Studio venv.
"""

from __future__ import annotations

import itertools
import json
import os
import queue
import secrets
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from annotation.launcher import LabelStudioLauncher
from simulate.annotator import AnnotatorDesk
from tests.support.served import free_port

REPO = Path(__file__).resolve().parents[2]
SAMPLE_IMAGES = ("chelsea", "coffee", "astronaut")


@pytest.fixture(name="free_port", scope="session")
def free_port_fixture():
    """:func:`free_port` for tests and their fixtures: call it once for each port needed."""
    return free_port


@pytest.fixture(scope="session")
def lite0_backbone_dir(tmp_path_factory) -> Path:
    """The EfficientNet-Lite0 SavedModel folder: the one `make backbone` built (read only, never written), or one
    built for this session in a temp folder, so no test writes into the repository's data folder."""
    from learner.backbones import ensure_backbone
    from learner.efficientnet_lite import read_sidecar

    built = REPO / "data" / "backbones" / "efficientnet-lite0"
    if (built / "saved_model.pb").is_file() and read_sidecar(built) is not None:
        return built
    return ensure_backbone("efficientnet-lite0", tmp_path_factory.mktemp("data"))[0]


@pytest.fixture(scope="session")
def backbone(lite0_backbone_dir, tmp_path_factory):
    """The real EfficientNet-Lite0, loaded once for the session (read only: embedding keeps no state a test could
    see but ``calls``, which tests read as a difference)."""
    from learner.backbones import load_backbone, resolve_backbone

    spec = resolve_backbone(str(lite0_backbone_dir), tmp_path_factory.mktemp("unused-data"))
    return load_backbone(spec, batch_size=32)


def write_sample_images(files_root: Path) -> dict[str, str]:
    """scikit-image's photos as JPEG files under ``files_root``; name -> path relative to it."""
    from PIL import Image
    from skimage import data

    files_root.mkdir(parents=True, exist_ok=True)
    images = {}
    for name in SAMPLE_IMAGES:
        Image.fromarray(getattr(data, name)()).convert("RGB").save(files_root / f"{name}.jpg", quality=90)
        images[name] = f"{name}.jpg"
    return images


@dataclass
class LabelStudioInstance:
    """A running Label Studio for tests (see the module docstring)."""

    launcher: LabelStudioLauncher
    token: str
    username: str
    password: str
    files_root: Path
    images: dict[str, str]
    _counter: Iterator[int] = field(default_factory=itertools.count)

    @property
    def url(self) -> str:
        return self.launcher.url

    def desk(self, token: str | None = None, timeout_s: float = 10) -> AnnotatorDesk:
        """A desk on this server, with a person's moves in the editor; the admin's token unless ``token`` is given."""
        return AnnotatorDesk(self.url, token or self.token, files_root=self.files_root, timeout_s=timeout_s)

    def invite(self, email: str, password: str = "annotator-pw-1") -> str:
        """Sign up another annotator through the invite link; their API token."""
        with self.desk() as desk:
            return desk.invite_annotator(email, password)

    def project_title(self, prefix: str) -> str:
        """A project title unique in this session."""
        return f"{prefix} {next(self._counter)} {secrets.token_hex(3)}"


@pytest.fixture(scope="session")
def label_studio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabelStudioInstance]:
    """One real Label Studio server for the whole test session (fresh data, free port); stopped at the end."""
    venv = Path(os.environ.get("JUICER_TEST_LS_VENV", REPO / ".venv-ls"))
    if not (venv / "bin" / "label-studio").exists():
        pytest.fail(f"no Label Studio in {venv}: run `make ls-venv` (integration tests need the real server)")
    root = tmp_path_factory.mktemp("label-studio")
    files_root = root / "files" / "images"
    images = write_sample_images(files_root)
    token = secrets.token_hex(20)
    launcher = LabelStudioLauncher(
        venv, root / "data", files_root, port=free_port(),
        username="admin@juicer.test", password="juicer-test-pw", token=token, log_path=root / "label-studio.log",
        ml_backend_address="127.0.0.1",  # juicer's services in these tests listen on loopback
    )  # fmt: skip
    launcher.start(wait=True, timeout_s=240)
    try:
        yield LabelStudioInstance(launcher, token, launcher.username, launcher.password, files_root, images)
    finally:
        launcher.stop()


@dataclass
class WebhookReceiver:
    """Records the POSTs Label Studio sends to ``url``."""

    url: str
    records: "queue.Queue[tuple[dict[str, str], dict[str, Any]]]"
    seen: list[tuple[dict[str, str], dict[str, Any]]] = field(default_factory=list)

    def wait_for(self, predicate: Callable[[dict[str, Any]], bool], timeout_s: float = 10) -> tuple[dict[str, str], dict[str, Any]]:
        """The first (headers, body) whose body satisfies ``predicate``, polling until ``timeout_s``."""
        for headers, body in self.seen:
            if predicate(body):
                return headers, body
        deadline = time.monotonic() + timeout_s
        while (left := deadline - time.monotonic()) > 0:
            try:
                record = self.records.get(timeout=left)
            except queue.Empty:
                break
            self.seen.append(record)
            if predicate(record[1]):
                return record
        raise AssertionError(f"no webhook matched within {timeout_s} s; got {[b.get('action') for _, b in self.seen]}")


@pytest.fixture
def webhook_receiver() -> Iterator[WebhookReceiver]:
    """An HTTP receiver on 127.0.0.1 that records webhook POSTs and answers 200 at once."""
    records: queue.Queue = queue.Queue()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
            length = int(self.headers.get("Content-Length", 0))
            body = json.loads(self.rfile.read(length) or b"{}")
            self.send_response(200)
            self.end_headers()
            records.put((dict(self.headers.items()), body))

        def log_message(self, *args: Any) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield WebhookReceiver(f"http://127.0.0.1:{httpd.server_address[1]}/hooks/label-studio", records)
    finally:
        httpd.shutdown()
        httpd.server_close()
