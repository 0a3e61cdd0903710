"""`download_flowers` and `juicer data` against a small real archive served by http.server on 127.0.0.1."""

from __future__ import annotations

import io
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
from PIL import Image
from skimage import data as skdata

from app.cli import main as cli
from tests.support.images import tar_of
from learner.datasets import download_flowers, load_folder
from learner.errors import DatasetError

pytestmark = pytest.mark.integration


def jpeg(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def flowers_archive() -> bytes:
    """The real archive's layout (flower_photos/<class>/*.jpg and a LICENSE.txt) with scikit-image photos."""
    return tar_of(
        {
            "flower_photos/LICENSE.txt": b"All images in this archive are licensed under the Creative Commons",
            "flower_photos/cats/chelsea.jpg": jpeg(skdata.chelsea()),
            "flower_photos/cats/chelsea_mirrored.jpg": jpeg(np.ascontiguousarray(skdata.chelsea()[:, ::-1])),
            "flower_photos/mugs/coffee.jpg": jpeg(skdata.coffee()),
            "flower_photos/space/astronaut.jpg": jpeg(skdata.astronaut()),
            "flower_photos/space/rocket.jpg": jpeg(skdata.rocket()),
        },
        "gz",
    )


class Server:
    """A loopback HTTP server answering from ``routes`` (path -> body); anything else is a 404."""

    def __init__(self) -> None:
        self.routes: dict[str, bytes] = {}
        self.short: set[str] = set()  # paths that promise more bytes than they send
        self.requests: list[str] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                server.requests.append(self.path)
                body = server.routes.get(self.path)
                if body is None:
                    self.send_error(404, "Not Found")
                    return
                self.send_response(200)
                self.send_header("Content-Type", "application/gzip")
                self.send_header("Content-Length", str(len(body) + (1000 if self.path in server.short else 0)))
                self.end_headers()
                self.wfile.write(body)
                self.close_connection = True

            def log_message(self, *args) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def __enter__(self) -> "Server":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=10)


@pytest.fixture
def server(flowers_archive):
    with Server() as running:
        running.routes["/flower_photos.tgz"] = flowers_archive
        yield running


def leftovers(folder):
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_download_unpacks_the_class_folders_and_is_idempotent(server, tmp_path):
    dest = tmp_path / "datasets"
    folder = download_flowers(f"{server.url}/flower_photos.tgz", dest, progress=False)
    assert folder == dest / "flower_photos"
    assert leftovers(dest) == ["flower_photos"]  # no temporary archive or scratch folder left behind
    dataset = load_folder(folder)
    assert dataset.class_names == ["cats", "mugs", "space"]
    assert dataset.class_counts() == {"cats": 2, "mugs": 1, "space": 2}
    assert dataset.sources[2].pixels((224, 224)).shape == (224, 224, 3)
    assert server.requests == ["/flower_photos.tgz"]

    assert download_flowers(f"{server.url}/flower_photos.tgz", dest, progress=False) == folder
    assert server.requests == ["/flower_photos.tgz"]  # already there: nothing downloaded


def test_http_404_is_a_dataset_error(server, tmp_path):
    with pytest.raises(DatasetError, match="HTTP 404"):
        download_flowers(f"{server.url}/missing.tgz", tmp_path, progress=False)
    assert leftovers(tmp_path) == []


def test_unreachable_host_is_a_dataset_error(tmp_path):
    with Server() as stopped:
        url = stopped.url
    with pytest.raises(DatasetError, match="cannot reach"):
        download_flowers(f"{url}/flower_photos.tgz", tmp_path, progress=False, timeout=5)


def test_corrupt_archive_is_a_dataset_error(server, tmp_path):
    server.routes["/corrupt.tgz"] = b"\x1f\x8b\x08\x00" + np.random.default_rng(0).bytes(4096)
    with pytest.raises(DatasetError, match="not a valid tar archive"):
        download_flowers(f"{server.url}/corrupt.tgz", tmp_path, progress=False)
    assert leftovers(tmp_path) == []


def test_truncated_download_is_a_dataset_error(server, flowers_archive, tmp_path):
    server.routes["/short.tgz"] = flowers_archive
    server.short.add("/short.tgz")
    with pytest.raises(DatasetError, match="incomplete"):
        download_flowers(f"{server.url}/short.tgz", tmp_path, progress=False)
    assert leftovers(tmp_path) == []


def test_path_traversal_is_refused(server, tmp_path):
    server.routes["/evil.tgz"] = tar_of({"flower_photos/a/x.jpg": jpeg(skdata.coffee()), "../escaped.txt": b"gotcha"}, "gz")
    dest = tmp_path / "datasets"
    with pytest.raises(DatasetError, match="unsafe member"):
        download_flowers(f"{server.url}/evil.tgz", dest, progress=False)
    assert not (tmp_path / "escaped.txt").exists() and not (dest / "escaped.txt").exists()
    assert leftovers(dest) == []


def test_archive_without_flower_photos_is_refused(server, tmp_path):
    server.routes["/other.tgz"] = tar_of({"pictures/a/x.jpg": jpeg(skdata.coffee())}, "gz")
    with pytest.raises(DatasetError, match="flower_photos"):
        download_flowers(f"{server.url}/other.tgz", tmp_path, progress=False)
    assert leftovers(tmp_path) == []


def test_juicer_data_flowers_and_info(server, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("JUICER_DATA_DIR", str(tmp_path))
    assert cli.main(["data", "flowers", "--url", f"{server.url}/flower_photos.tgz", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert str(tmp_path / "datasets" / "flower_photos") in out
    assert "5 images, 3 classes" in out and "space" in out

    assert cli.main(["data", "info", str(tmp_path / "datasets" / "flower_photos")]) == 0
    assert "cats" in capsys.readouterr().out

    assert cli.main(["data", "flowers", "--url", f"{server.url}/nope.tgz", "--dest", str(tmp_path / "x")]) == 1
    assert "HTTP 404" in capsys.readouterr().err


def test_juicer_data_info_fashion_mnist(capsys, monkeypatch):
    monkeypatch.delenv("JUICER_FASHION_MNIST_DIR", raising=False)
    assert cli.main(["data", "info", "fashion-mnist"]) == 0
    out = capsys.readouterr().out
    assert "70000 images, 10 classes" in out and "Ankle boot" in out
