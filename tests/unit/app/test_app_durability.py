"""Crash-safe storage and start-up that survives what a crash or an operator leaves behind."""

from __future__ import annotations

import os
import sqlite3
import time
from pathlib import Path

import sqlalchemy as sa

from app.core.files import sweep_temp_files, write_atomic
from app.store import NewItem, NewLabel, NewModelVersion, Store

OLD_SCHEMA = Path(__file__).parents[2] / "fixtures" / "juicer-db-main-2026-12-01.sql"


def _old_data_folder(tmp_path: Path) -> Path:
    """A data folder as today's main (2136fb1) leaves it: its schema and rows, no migration table."""
    folder = tmp_path / "old"
    folder.mkdir()
    connection = sqlite3.connect(folder / "juicer.db")
    connection.executescript(OLD_SCHEMA.read_text())
    connection.close()
    return folder


def _counts(engine) -> dict[str, int]:
    tables = ["items", "labels", "predictions", "review_tasks", "model_versions", "webhook_events", "cursors", "meta", "jobs"]
    with engine.connect() as conn:
        return {table: conn.execute(sa.text(f"SELECT COUNT(*) FROM {table}")).scalar_one() for table in tables}


def test_a_data_folder_from_todays_main_is_upgraded_in_place_with_nothing_lost(tmp_path):
    folder = _old_data_folder(tmp_path)
    before = _counts(sa.create_engine(f"sqlite:///{folder / 'juicer.db'}"))
    assert before["items"] == 3 and before["labels"] == 3
    store = Store.open(folder)
    try:
        assert _counts(store.engine) == before
        assert store.schema_version() == store.head_version()
        assert store.get_item("pool-1").label.label == "green"
        assert store.get_meta("classes") == ["red", "green", "blue"]
        store.add_items([NewItem("new-1", "d" * 64, "new/1.png", "pool", "images/d.png")])
        store.quarantine("new-1", "image file missing")  # a column the old schema did not have
        assert [row.id for row in store.quarantined()] == ["new-1"]
    finally:
        store.close()
    again = Store.open(folder)  # a second start runs no migration and loses nothing
    try:
        assert _counts(again.engine)["items"] == 4
    finally:
        again.close()


def test_a_fresh_store_is_created_at_the_newest_schema(tmp_path):
    store = Store.open(tmp_path)
    try:
        assert store.schema_version() == store.head_version()
    finally:
        store.close()


def test_stray_temp_files_of_a_killed_write_are_swept(tmp_path):
    images = tmp_path / "files" / "images"
    write_atomic(images / "kept.png", b"png")
    stray = images / ".kept.png.abc123.tmp"
    stray.write_bytes(b"half")
    old = time.time() - 3600
    os.utime(stray, (old, old))
    fresh = images / ".other.png.def456.tmp"  # a write in flight right now in another process
    fresh.write_bytes(b"in flight")
    removed = sweep_temp_files(tmp_path)
    assert removed == [stray] and not stray.exists() and fresh.exists()
    assert (images / "kept.png").read_bytes() == b"png"


def test_a_corrupt_newest_model_falls_back_to_the_one_before(services, trained, caplog):
    import pickle

    from app.core.serving import load_last_good

    class Exploding:
        def __reduce__(self):
            return (int, ("not a number",))  # unpickling raises ValueError

    (services.data_dir / "models" / "v0002.pkl").write_bytes(pickle.dumps(Exploding()))
    row = vars(services.store.get_model("v0001")) | {"version": "v0002", "seq": 2, "head_path": "models/v0002.pkl"}
    row.pop("created_at")
    services.store.record_model(NewModelVersion(**row))
    model = load_last_good(services.store.list_models(), services.data_dir, "fake-8x8")
    assert model.version == "v0001"
    assert "v0002" in caplog.text


def test_a_missing_image_is_quarantined_not_fatal(services, trained):
    from tests.support.images import add_png_item, png
    from tests.unit.app.conftest import COLOURS

    path = add_png_item(services.store, services.data_dir, "gone", png(COLOURS["red"], seed=4242), "seed", file_stem="gone")
    services.store.add_labels([NewLabel("gone", "red", "api")])
    path.unlink()
    result = services.trainer.retrain(force=True)
    assert result.version == "v0002"
    assert [row.id for row in services.store.quarantined()] == ["gone"]
    assert "missing" in services.store.quarantined()[0].quarantined


def test_quarantined_items_are_listed_by_the_api(client, services, trained):
    services.store.add_items([NewItem("q1", "e" * 64, "pool/q1", "pool", "images/q1.png")])
    services.store.quarantine("q1", "image file missing: images/q1.png")
    body = client.get("/v1/items?quarantined=true").json
    assert [row["id"] for row in body["items"]] == ["q1"]


def test_readyz_is_ready_but_degraded_while_label_studio_is_down(client, services, trained):
    services.desk.down = True
    response = client.get("/readyz")
    assert response.status_code == 200
    assert response.json["status"] == "degraded" and response.json["checks"]["label_studio"] is False
    assert client.post("/v1/predict", json={"image": __import__("base64").b64encode(
        __import__("tests.unit.app.conftest", fromlist=["png"]).png((200, 30, 30))).decode()}).status_code == 200


def test_label_studio_down_at_start_is_retried_by_a_job(services):
    from app.worker.scheduler import connect_label_studio

    services.project = None
    services.desk.down = True
    assert connect_label_studio(services, "http://127.0.0.1:8000/v1/webhooks/label-studio") is False
    services.desk.down = False
    assert connect_label_studio(services, "http://127.0.0.1:8000/v1/webhooks/label-studio") is True
    assert services.project is not None


# -- bounded memory and disk ------------------------------------------------------------------------
def test_the_embedding_memo_is_an_lru_of_bounded_size(services):
    import numpy as np

    from learner.images import ArrayImage

    services.embeddings.memo_size = 3
    images = [ArrayImage(np.full((8, 8, 3), value, dtype=np.uint8), f"a{value}") for value in range(5)]
    services.embeddings.embed(images[:3])
    services.embeddings.embed(images[:1])  # a0 used again: the oldest unused is a1
    services.embeddings.embed(images[3:4])
    held = set(services.embeddings.memo_hashes())
    assert len(held) == 3 and images[0].content_hash in held and images[1].content_hash not in held
    assert services.embeddings.embed(images).shape == (5, 192)  # evicted ones come back from the disk cache


def test_retention_removes_old_served_images_and_predictions_only(services):
    from datetime import timedelta

    from app.worker.scheduler import apply_retention
    from app.store import NewPrediction, utcnow
    from app.store.schema import items, predictions

    images = services.settings.images_dir
    images.mkdir(parents=True, exist_ok=True)
    for name in ("old", "new", "labelled", "queued"):
        (images / f"{name}.png").write_bytes(b"png")
    services.store.record_predictions(
        [NewPrediction(name, "v0001", "red", 0.9, {"red": 0.9}, "review" if name == "queued" else "accept", "threshold")
         for name in ("old", "new", "labelled", "queued")],
        [NewItem(name, name * 16, name, "served", f"images/{name}.png") for name in ("old", "new", "labelled", "queued")],
    )  # fmt: skip
    services.store.add_labels([NewLabel("labelled", "red", "api")])
    long_ago = utcnow() - timedelta(days=40)
    with services.store.engine.begin() as conn:
        conn.execute(items.update().where(items.c.id != "new").values(created_at=long_ago))
        conn.execute(predictions.update().where(predictions.c.item_id != "new").values(created_at=long_ago))
    services.settings.service.keep_served_days = 30
    removed = apply_retention(services)
    assert removed == 1
    assert services.store.get_item("old") is None and not (images / "old.png").exists()
    for kept in ("new", "labelled", "queued"):
        assert services.store.get_item(kept) is not None and (images / f"{kept}.png").exists()
