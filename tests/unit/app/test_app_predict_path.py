"""The prediction path's disk work beside the model: what is on disk when /v1/predict answers, and after a failure."""

from __future__ import annotations

import base64
import hashlib
import threading

import numpy as np

from app.core.serving import CacheWriter, HeldVectors
from learner.cache import EmbeddingCache
from tests.support.images import png
from tests.unit.app.conftest import COLOURS


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def images_on_disk(services) -> set[str]:
    folder = services.data_dir / "files" / "images"
    return {path.name for path in folder.iterdir()} if folder.is_dir() else set()


def other_view_misses(services, data: list[bytes]) -> bool:
    """Whether another process's view of the cache (a fresh connection) lacks every one of these images."""
    other = EmbeddingCache(services.data_dir / "embeddings", services.embeddings.backbone_id)
    return len(other.missing([hashlib.sha256(d).hexdigest() for d in data])) == len(data)


def test_an_answered_prediction_has_its_item_review_task_and_image_then_its_vector_reaches_the_cache(client, trained):
    trained.settings.service.decision_threshold = 1.0  # everything goes to review
    data = [png(COLOURS["green"], seed=s) for s in (301, 302)]
    response = client.post("/v1/predict", json={"images": [b64(d) for d in data]})
    assert response.status_code == 200, response.json
    assert trained.embeddings.flush(timeout_s=30) and other_view_misses(trained, data)  # not before the answer is sent
    response.close()  # what a server does once the answer is sent: the vectors go to the cache's writer
    item_ids = [p["item_id"] for p in response.json["predictions"]]
    items = [trained.store.get_item(item_id) for item_id in item_ids]
    assert [item.split for item in items] == ["served", "served"]
    assert {row.item_id for row in trained.store.due_reviews(10)} >= set(item_ids)
    assert {item.image_path.split("/")[-1] for item in items} <= images_on_disk(trained)
    assert set(trained.embeddings.memo_hashes()) >= {item.content_hash for item in items}  # never embedded twice here
    assert trained.embeddings.flush(timeout_s=30)
    # Another process's view of the cache (a fresh connection): both vectors were written behind the answer.
    other = EmbeddingCache(trained.data_dir / "embeddings", trained.embeddings.backbone_id)
    assert other.missing([item.content_hash for item in items]) == []


def test_an_image_that_fails_to_decode_leaves_no_file_and_no_item(client, trained):
    good = png(COLOURS["red"], seed=303)
    before = images_on_disk(trained)
    served = trained.store.items_of_split("served")
    response = client.post("/v1/predict", json={"images": [b64(png(COLOURS["blue"], seed=304)), b64(good[: len(good) // 2])]})
    assert response.status_code == 422, response.json
    assert images_on_disk(trained) == before  # the good one's file too: nothing of the failed request stays
    assert trained.store.items_of_split("served") == served


def test_a_failed_cache_write_is_logged_and_the_prediction_stands(client, trained, monkeypatch, caplog):
    def broken(hashes, vectors):
        raise OSError("disk full")

    monkeypatch.setattr(trained.embeddings.cache, "put_many", broken)
    response = client.post("/v1/predict", json={"image": b64(png(COLOURS["blue"], seed=305))})
    assert response.status_code == 200, response.json
    response.close()
    [prediction] = response.json["predictions"]
    assert trained.embeddings.flush(timeout_s=30)
    assert trained.store.get_item(prediction["item_id"]).prediction.model_version == "v0001"
    assert "writing 1 vectors to the embedding cache failed" in caplog.text


def test_the_cache_writer_writes_concurrent_requests_vectors_in_one_transaction(tmp_path, monkeypatch):
    cache = EmbeddingCache(tmp_path, "fake:1")
    calls = []
    put_many = cache.put_many
    monkeypatch.setattr(cache, "put_many", lambda hashes, vectors: (calls.append(list(hashes)), put_many(hashes, vectors)))
    writer = CacheWriter(cache)
    gate = threading.Event()
    monkeypatch.setattr(writer, "_write", _gated(writer._write, gate))
    writer.submit(_held(cache, ["0" * 64], 9.0))  # its write waits on the gate: the next three gather meanwhile
    for i, value in enumerate((1.0, 2.0, 1.0)):
        writer.submit(_held(cache, [f"{i % 2 + 1:064x}"], value))
    gate.set()
    assert writer.flush(timeout_s=30)
    vectors, found = cache.lookup(["0" * 64, f"{1:064x}", f"{2:064x}"])
    assert found.all() and vectors[:, 0].tolist() == [9.0, 1.0, 2.0]
    assert len(calls) <= 2 and set(calls[-1]) >= {f"{1:064x}", f"{2:064x}"}  # one put_many for those gathered


def _held(cache, hashes, value):
    held = HeldVectors(cache)
    held.put_many(hashes, np.full((len(hashes), 3), value, dtype=np.float32))
    return held


def _gated(write, gate):
    def gated(group):
        gate.wait(30)
        write(group)

    return gated


def test_the_writes_start_after_the_cache_lookup_and_before_the_backbone_and_also_for_a_remembered_image(
    client, trained, monkeypatch
):
    import app.http.api.predict as route

    order = []
    lookup, embed, beside = trained.embeddings.cache.lookup, trained.embeddings.backbone.embed, route.beside
    monkeypatch.setattr(trained.embeddings.cache, "lookup", lambda hashes: (order.append("lookup"), lookup(hashes))[1])
    monkeypatch.setattr(trained.embeddings.backbone, "embed", lambda pixels: (order.append("backbone"), embed(pixels))[1])
    monkeypatch.setattr(route, "beside", lambda function, *args: (order.append("writes"), beside(function, *args))[1])
    data = png(COLOURS["red"], seed=306)
    response = client.post("/v1/predict", json={"image": b64(data)})
    assert response.status_code == 200, response.json
    assert order == ["lookup", "writes", "backbone"]
    order.clear()
    again = client.post("/v1/predict", json={"image": b64(data)})  # in the memo: no lookup, no backbone
    assert again.status_code == 200, again.json
    assert order == ["writes"]
    assert again.json["predictions"][0]["item_id"] == response.json["predictions"][0]["item_id"]
    assert trained.store.get_item(response.json["predictions"][0]["item_id"]).image_path.split("/")[-1] in images_on_disk(trained)
