"""The prediction path's disk work beside the model: what is on disk when /v1/predict answers, and after a failure."""

from __future__ import annotations

import base64

import numpy as np
import pytest

from app.core.serving import Beside, HeldVectors
from learner.cache import EmbeddingCache
from tests.support.images import png
from tests.unit.app.conftest import COLOURS


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def images_on_disk(services) -> set[str]:
    folder = services.data_dir / "files" / "images"
    return {path.name for path in folder.iterdir()} if folder.is_dir() else set()


def test_an_answered_prediction_has_its_item_review_task_image_and_cached_vector(client, trained):
    trained.settings.service.decision_threshold = 1.0  # everything goes to review
    data = [png(COLOURS["green"], seed=s) for s in (301, 302)]
    response = client.post("/v1/predict", json={"images": [b64(d) for d in data]})
    assert response.status_code == 200, response.json
    item_ids = [p["item_id"] for p in response.json["predictions"]]
    items = [trained.store.get_item(item_id) for item_id in item_ids]
    assert [item.split for item in items] == ["served", "served"]
    assert {row.item_id for row in trained.store.due_reviews(10)} >= set(item_ids)
    assert {item.image_path.split("/")[-1] for item in items} <= images_on_disk(trained)
    # Another process's view of the cache (a fresh connection): both vectors were written before the answer.
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


def test_a_failed_cache_write_still_answers_the_committed_prediction(client, trained, monkeypatch, caplog):
    def broken(hashes, vectors):
        raise OSError("disk full")

    monkeypatch.setattr(trained.embeddings.cache, "put_many", broken)
    response = client.post("/v1/predict", json={"image": b64(png(COLOURS["blue"], seed=305))})
    assert response.status_code == 200, response.json
    [prediction] = response.json["predictions"]
    assert trained.store.get_item(prediction["item_id"]).prediction.model_version == "v0001"
    assert "embedding cache write" in caplog.text


def test_held_vectors_reach_the_cache_only_when_written(tmp_path):
    cache = EmbeddingCache(tmp_path, "fake:1")
    held = HeldVectors(cache)
    held.put_many(["a" * 64, "b" * 64], np.ones((2, 3), dtype=np.float32))
    held.put_many(["c" * 64], np.zeros((1, 3), dtype=np.float32))
    assert len(held) == 3
    assert cache.missing(["a" * 64, "c" * 64]) == ["a" * 64, "c" * 64]
    held.write()
    vectors, found = cache.lookup(["a" * 64, "b" * 64, "c" * 64])
    assert found.all() and vectors[0].tolist() == [1, 1, 1] and vectors[2].tolist() == [0, 0, 0]


def test_beside_returns_the_value_or_raises_the_error_in_the_caller():
    assert Beside(sum, [1, 2, 3]).result() == 6
    with pytest.raises(ZeroDivisionError):
        Beside(lambda: 1 / 0).result()
