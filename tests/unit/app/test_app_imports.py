"""Bulk import (app.core.imports): the walker, the checks as uploads get them, the summary, and resuming."""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from app.core.imports import CHUNK_IMAGES, Skipped, import_images, walk
from app.store import Store
from learner.cache import EmbeddingCache, embed_sources
from tests.support.images import png, tar_of
from tests.unit.app.conftest import FakeBackbone
from tests.unit.app.test_app_api import pixel_bomb

MAX_PIXELS = 1_000_000
MAX_BYTES = 200_000


def jpeg(seed: int, size: tuple[int, int] = (24, 24)) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 255, (*size, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG")
    return buffer.getvalue()


@pytest.fixture
def store(tmp_path):
    store = Store.open(tmp_path / "data")
    yield store
    store.close()


@pytest.fixture
def cache(tmp_path):
    with EmbeddingCache(tmp_path / "data" / "embeddings", FakeBackbone.id) as cache:
        yield cache


def embedder(cache):
    backbone = FakeBackbone()
    return lambda sources: embed_sources(backbone, cache, sources, progress=False)


def run_import(store, tmp_path, paths, cache=None, **kwargs):
    return import_images(
        walk(paths, labelled=kwargs.pop("labelled", False), max_bytes=MAX_BYTES),
        store=store, data_dir=tmp_path / "data", max_pixels=MAX_PIXELS, embed=None if cache is None else embedder(cache),
        **kwargs,
    )  # fmt: skip


@pytest.fixture
def messy(tmp_path):
    """A folder of images, duplicates, non-images, a zero-byte file, a truncated PNG and JPEG, a bomb, a loop."""
    root = tmp_path / "photos"
    (root / "a" / "deeper").mkdir(parents=True)
    (root / "b").mkdir()
    for i in range(3):
        (root / "a" / f"{i}.png").write_bytes(png((200, 10 * i, 10), seed=i))
    (root / "a" / "deeper" / "photo.jpg").write_bytes(jpeg(1))
    (root / "b" / "copy-of-0.png").write_bytes(png((200, 0, 10), seed=0))  # a duplicate of a/0.png
    (root / "b" / "notes.txt").write_text("not a picture\n")
    (root / "b" / "empty.png").write_bytes(b"")
    (root / "b" / "cut.png").write_bytes(png((1, 2, 3), seed=9, size=(64, 64))[:-30])
    (root / "b" / "cut.jpg").write_bytes(jpeg(2, size=(64, 64))[:400])
    (root / "b" / "bomb.png").write_bytes(pixel_bomb())
    (root / "b" / "huge.png").write_bytes(png((1, 2, 3), seed=3, size=(1100, 1000), noise=0))  # 1.1 MP > limit, < max bytes
    (root / "b" / "loop").symlink_to(root)  # a symlink loop back to the top
    return root


def reasons(summary) -> dict[str, str]:
    return {Path(skipped.name).name: skipped.reason for skipped in summary.skipped}


@pytest.mark.parametrize("embedded", [True, False], ids=["embedded", "check-decode"])
def test_a_messy_folder_imports_the_images_and_names_each_refusal(messy, store, cache, tmp_path, embedded):
    summary = run_import(store, tmp_path, [messy], cache=cache if embedded else None)

    assert summary.imported == 4 and summary.duplicates == 1
    assert reasons(summary) == {
        "notes.txt": "not an image", "empty.png": "not an image", "cut.png": "truncated", "cut.jpg": "truncated",
        "bomb.png": "too many pixels", "huge.png": "too many pixels",
    }  # fmt: skip
    assert len(summary.lines()) == 1 + len(summary.skipped)
    assert store.count_items() == {"pool": 4}
    items = store.items_of_split("pool")
    assert all((tmp_path / "data" / "files" / item.image_path).is_file() for item in items)
    if embedded:
        assert cache.missing([item.content_hash for item in items]) == []


def test_a_symlink_loop_lists_each_file_once(messy):
    names = [c.name for c in walk([messy], max_bytes=MAX_BYTES) if not isinstance(c, Skipped)]
    assert len(names) == len(set(names)) == 11


def test_a_second_run_imports_nothing_again(messy, store, cache, tmp_path):
    run_import(store, tmp_path, [messy], cache=cache)
    again = run_import(store, tmp_path, [messy], cache=cache)
    assert again.imported == 0 and again.duplicates == 5
    assert store.count_items() == {"pool": 4}


def test_a_run_killed_after_writing_images_completes_on_the_next_run(tmp_path, store, cache, monkeypatch):
    """Killed between a chunk's image files and its rows: the files stay, the rerun registers every image once."""
    root = tmp_path / "many"
    root.mkdir()
    n_images = CHUNK_IMAGES + 20
    for i in range(n_images):
        (root / f"{i:04d}.png").write_bytes(png(seed=i, size=(8, 8)))
    calls = {"n": 0}
    original = Store.add_items_with_labels

    def dies_on_second_chunk(self, new_items, new_labels=()):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt  # as a kill between the image files and the transaction
        return original(self, new_items, new_labels)

    monkeypatch.setattr(Store, "add_items_with_labels", dies_on_second_chunk)
    with pytest.raises(KeyboardInterrupt):
        run_import(store, tmp_path, [root], cache=cache)
    assert store.count_items() == {"pool": CHUNK_IMAGES}
    monkeypatch.setattr(Store, "add_items_with_labels", original)

    resumed = run_import(store, tmp_path, [root], cache=cache)

    assert resumed.imported == 20 and resumed.duplicates == CHUNK_IMAGES
    assert store.count_items() == {"pool": n_images}


def test_a_labelled_folder_imports_items_with_their_labels(tmp_path, store):
    root = tmp_path / "labelled"
    for k, name in enumerate(("red", "blue")):
        (root / name / "sub").mkdir(parents=True)
        (root / name / "1.png").write_bytes(png((200, 0, k * 100), seed=k))
        (root / name / "sub" / "2.png").write_bytes(png((200, 0, k * 100), seed=k + 10))
    (root / "stray.png").write_bytes(png((1, 1, 1), seed=99))
    (root / "green").mkdir()
    (root / "green" / "3.png").write_bytes(png((0, 200, 0), seed=5))

    summary = run_import(store, tmp_path, [root], labelled=True, split="holdout", classes=["red", "blue"])

    assert summary.imported == 4 and summary.labels == {"red": 2, "blue": 2}
    assert reasons(summary) == {"stray.png": "no class", "3.png": "unknown class"}
    labelled = store.current_labels(holdout=True)
    assert sorted(label.label for label in labelled) == ["blue", "blue", "red", "red"]
    assert store.label_counts_by_source() == {"import": 4}


def test_a_list_file_names_paths_relative_to_itself(tmp_path, store):
    folder = tmp_path / "list"
    folder.mkdir()
    (folder / "x.png").write_bytes(png((9, 9, 9), seed=1))
    (folder / "paths.txt").write_text("# my images\nx.png\n\nmissing.png\n")
    summary = run_import(store, tmp_path, [folder / "paths.txt"])
    assert summary.imported == 1
    assert reasons(summary) == {"missing.png": "unreadable"}


def test_a_file_over_the_byte_limit_is_refused_before_it_is_read_whole(tmp_path, store):
    big = tmp_path / "big.png"
    big.write_bytes(png(seed=1, size=(600, 600)))
    assert os.path.getsize(big) > MAX_BYTES
    summary = run_import(store, tmp_path, [big])
    assert summary.imported == 0 and reasons(summary) == {"big.png": "unreadable"}


# -- POST /v1/items/bulk: a tar read as a stream --------------------------------------------------------
def test_the_bulk_route_imports_a_tar_and_answers_the_summary(client, services):
    body = tar_of({
        "a.png": png((200, 0, 0), seed=1), "b.png": png((0, 200, 0), seed=2), "again.png": png((200, 0, 0), seed=1),
        "notes.txt": b"hello", "empty.png": b"", "cut.png": png((0, 0, 200), seed=3)[:-30], "bomb.png": pixel_bomb(),
    })  # fmt: skip
    response = client.post("/v1/items/bulk", data=body, content_type="application/x-tar")

    assert response.status_code == 200, response.json
    assert response.json["imported"] == 2 and response.json["duplicates"] == 1
    assert {s["name"]: s["reason"] for s in response.json["skipped"]} == {
        "notes.txt": "not an image", "empty.png": "not an image", "cut.png": "truncated", "bomb.png": "too many pixels",
    }  # fmt: skip
    assert services.store.count_items() == {"pool": 2}
    again = client.post("/v1/items/bulk", data=body, content_type="application/x-tar")
    assert again.json["imported"] == 0 and again.json["duplicates"] == 3


def test_the_bulk_route_imports_a_labelled_holdout(client, services):
    body = tar_of({"red/1.png": png((220, 30, 30), seed=1), "blue/2.png": png((20, 40, 230), seed=2),
                   "purple/3.png": png((120, 0, 120), seed=3), "loose.png": png(seed=4)})  # fmt: skip
    response = client.post("/v1/items/bulk?holdout=true", data=body, content_type="application/x-tar")

    assert response.status_code == 200, response.json
    assert response.json["labels"] == {"red": 1, "blue": 1}
    assert {s["name"]: s["reason"] for s in response.json["skipped"]} == {"purple/3.png": "unknown class", "loose.png": "no class"}
    assert sorted(label.label for label in services.store.current_labels(holdout=True)) == ["blue", "red"]


def test_the_bulk_route_refuses_what_is_no_tar_and_a_body_over_its_limit(client, services):
    not_tar = client.post("/v1/items/bulk", data=b"x" * 2048, content_type="application/x-tar")
    assert not_tar.status_code == 400 and not_tar.mimetype == "application/problem+json"
    wrong_type = client.post("/v1/items/bulk", json={"images": []})
    assert wrong_type.status_code == 415
    services.settings.service.bulk_max_bytes = 4096
    big = tar_of({f"{i}.png": png(seed=i, size=(32, 32)) for i in range(20)})
    too_big = client.post("/v1/items/bulk", data=big, content_type="application/x-tar")
    assert too_big.status_code == 413
    assert services.store.count_items() == {}


def test_a_truncated_tar_keeps_what_came_whole(client, services):
    """Cut inside the second member's data: the first is imported, the second named as truncated."""
    body = tar_of({f"{i}.png": png((10 * i, 0, 0), seed=i) for i in range(3)})
    response = client.post("/v1/items/bulk", data=body[:1700], content_type="application/x-tar")
    assert response.status_code == 200
    assert [(s["name"], s["reason"]) for s in response.json["skipped"]] == [("1.png", "truncated")]
    assert response.json["imported"] == services.store.count_items()["pool"] == 1


# -- a running service, and juicer serve --images ---------------------------------------------------------
def test_a_running_service_queues_imported_items_at_its_next_refresh(services, tmp_path):
    """The import writes rows only; the service's refresh job (no restart) finds and queues them."""
    from tests.unit.app.conftest import COLOURS

    folder = tmp_path / "photos"
    folder.mkdir()
    for k, colour in enumerate(COLOURS.values()):
        for i in range(3):
            (folder / f"{k}-{i}.png").write_bytes(png(colour, seed=10 * k + i))
    summary = import_images(walk([folder], max_bytes=MAX_BYTES), store=services.store, data_dir=services.data_dir,
                            max_pixels=MAX_PIXELS, embed=None)  # fmt: skip
    assert summary.imported == 9

    assert services.trainer.refresh_review_queue() == services.settings.service.review_batch_size
    assert len(services.store.due_reviews(limit=100)) == services.settings.service.review_batch_size


def test_the_queue_waits_for_an_import_under_way_and_refreshes_once_it_finished(services, tmp_path):
    """An import in another process (its heartbeat in the store): no holdout is drawn and no pick is made over the
    chunks that arrived so far; once it has finished, the scheduler's refresh-after-import job queues over all of it."""
    from app.core.imports import _import_state, import_running, pool_grew_since_refresh
    from app.worker.scheduler import refresh_after_import
    from tests.unit.app.conftest import COLOURS

    folder = tmp_path / "photos"
    folder.mkdir()
    for k, colour in enumerate(COLOURS.values()):
        for i in range(3):
            (folder / f"{k}-{i}.png").write_bytes(png(colour, seed=10 * k + i))
    import_images(walk([folder], max_bytes=MAX_BYTES), store=services.store, data_dir=services.data_dir,
                  max_pixels=MAX_PIXELS, embed=None)  # fmt: skip
    _import_state(services.store, running=True)  # a second import is under way elsewhere
    assert import_running(services.store)
    assert services.trainer.refresh_review_queue() == 0 and services.store.due_reviews(limit=100) == []

    _import_state(services.store, running=False)  # ... and finished
    assert pool_grew_since_refresh(services.store)
    assert refresh_after_import(services) == services.settings.service.review_batch_size
    assert not pool_grew_since_refresh(services.store) and refresh_after_import(services) == 0  # once, not every tick


def test_a_killed_import_stops_holding_the_queue_once_its_heartbeat_is_stale(services):
    from datetime import timedelta

    from app.core.imports import IMPORT_STALE_S, IMPORT_STATE, import_running
    from app.store import utcnow

    beat = (utcnow() - timedelta(seconds=IMPORT_STALE_S + 1)).isoformat()
    services.store.set_meta(IMPORT_STATE, {"running": True, "heartbeat": beat})  # SIGKILLed: never said it ended
    assert not import_running(services.store)


def test_serve_images_imports_a_labelled_folder_and_takes_its_classes(tmp_path):
    from app.cli.commands.serve import _import_images, with_classes
    from config import load_settings

    root = tmp_path / "labelled"
    for k, name in enumerate(("cats", "dogs")):
        (root / name).mkdir(parents=True)
        (root / name / "1.png").write_bytes(png((200, 0, k * 100), seed=k))
    settings = load_settings(environ={}, data_dir=tmp_path / "data")
    store = Store.from_settings(settings)
    try:
        with pytest.raises(SystemExit, match="--classes"):
            _import_images(settings, store, [str(root)], labelled=False)
        _import_images(settings, store, [str(root)], labelled=True)
        assert store.get_meta("classes") == ["cats", "dogs"]
        assert store.count_items() == {"seed": 2}
    finally:
        store.close()
    assert with_classes(settings, "a, b,c").service.classes == ["a", "b", "c"]
    with pytest.raises(SystemExit, match="at least two"):
        with_classes(settings, "solo")


def test_a_list_of_urls_is_fetched_by_the_task_image_rules(tmp_path, store):
    """URLs go through the fetcher (annotation.task_images in production); a refused one is one skipped line."""
    from annotation.errors import TaskImageError

    served = {"https://photos.example.org/a.png": png((1, 2, 3), seed=1)}

    def fetch(url: str) -> bytes:
        if url not in served:
            raise TaskImageError(f"image {url!r}: host not in label_studio.image_hosts")
        return served[url]

    listing = tmp_path / "urls.txt"
    listing.write_text("https://photos.example.org/a.png\nhttp://169.254.169.254/latest\n")
    summary = import_images(walk([listing], max_bytes=MAX_BYTES, fetch=fetch), store=store, data_dir=tmp_path / "data",
                            max_pixels=MAX_PIXELS, embed=None)  # fmt: skip
    assert summary.imported == 1
    assert [(s.name, s.reason) for s in summary.skipped] == [("http://169.254.169.254/latest", "unreadable")]
