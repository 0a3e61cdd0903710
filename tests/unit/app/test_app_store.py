"""The store: items, labels, the review outbox, model versions, events, jobs.

Every test runs on SQLite in a temp folder and on a real PostgreSQL (a fresh database each; marked ``postgres``).
"""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
import sqlalchemy as sa

from annotation.models import LabelEvent
from app.store import NewItem, NewLabel, NewModelVersion, NewPrediction, Store, StoreError, utcnow


@pytest.fixture
def store(store_url):
    store = Store.from_url(store_url)
    yield store
    store.close()


def _item(n: int, split: str = "pool") -> NewItem:
    return NewItem(id=f"item-{n}", content_hash=f"{n:064x}", source=f"test/{n}", split=split, image_path=f"images/{n}.png")


def _prediction(item_id: str, decision: str = "review", version: str = "v1", score: float = 0.4) -> NewPrediction:
    return NewPrediction(item_id, version, "cat", score, {"cat": score, "dog": 1 - score}, decision, "max_probability")


def test_open_uses_wal_and_reopens_with_data(tmp_path):
    store = Store.open(tmp_path)
    store.add_items([_item(1)])
    with store.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
    store.close()
    again = Store.open(tmp_path)
    assert again.get_item("item-1").content_hash == f"{1:064x}"
    again.close()


def test_add_items_ignores_known_ids_and_rejects_bad_split(store):
    assert store.add_items([_item(1), _item(2)]) == 2
    assert store.add_items([_item(2), _item(3)]) == 1
    assert store.count_items() == {"pool": 3}
    with pytest.raises(StoreError, match="split"):
        store.add_items([NewItem("x", "h", "s", "nowhere")])


def test_current_label_is_newest_active_and_holdout_is_kept_apart(store):
    store.add_items([_item(1), _item(2, "holdout")])
    store.add_labels([NewLabel("item-1", "cat", "api"), NewLabel("item-1", "dog", "api"), NewLabel("item-2", "cat", "dataset")])
    training = store.current_labels()
    assert [(row.item_id, row.label) for row in training] == [("item-1", "dog")]
    assert [(row.item_id, row.label) for row in store.current_labels(holdout=True)] == [("item-2", "cat")]
    assert store.count_new_labels(0) == 2  # holdout labels never count towards a retrain


def test_labels_for_unknown_items_are_refused(store):
    with pytest.raises(StoreError, match="unknown item"):
        store.add_labels([NewLabel("nope", "cat", "api")])


def test_label_events_are_idempotent_and_updates_and_deletes_apply(store):
    store.add_items([_item(1)])
    created = LabelEvent("item-1", None, 101, "cat", "ann@x", None, "set")
    assert store.apply_label_events([created, created]) == 1
    assert store.apply_label_events([created]) == 0
    assert [row.label for row in store.current_labels()] == ["cat"]
    assert store.apply_label_events([LabelEvent("item-1", None, 101, "dog", "ann@x", None, "set")]) == 1
    assert [row.label for row in store.current_labels()] == ["dog"]
    assert store.apply_label_events([LabelEvent("item-1", None, 101, None, None, None, "withdrawn")]) == 1
    assert store.current_labels() == []
    assert store.apply_label_events([LabelEvent("ghost", None, 7, "cat", None, None, "set")]) == 0


def test_prediction_and_review_queue_commit_together(store):
    store.record_predictions([_prediction("item-1"), _prediction("item-2", "accept", score=0.9)], [_item(1, "served"), _item(2, "served")])
    assert store.prediction_counts() == {"review": 1, "accept": 1}
    due = store.due_reviews(10)
    assert [row.item_id for row in due] == ["item-1"]
    assert due[0].image_path == "images/1.png"


def test_prediction_for_unknown_item_rolls_back_the_whole_batch(store):
    with pytest.raises(StoreError, match="unknown item id.*missing"):
        store.record_predictions([_prediction("item-1"), _prediction("missing")], [_item(1)])
    assert store.get_item("item-1") is None
    assert store.prediction_counts() == {}
    assert store.review_counts()["pending"] == 0


def test_outbox_retry_backoff_delivery_and_requeue(store):
    store.record_predictions([_prediction("item-1")], [_item(1)])
    store.mark_delivery_failed(["item-1"], "server down", utcnow() + timedelta(seconds=60))
    assert store.due_reviews(10) == []
    assert [row.item_id for row in store.due_reviews(10, now=utcnow() + timedelta(seconds=61))] == ["item-1"]
    store.mark_delivered({"item-1": 55}, {"item-1": "v1"})
    assert store.review_counts()["sent"] == 1
    assert store.get_item("item-1").review.ls_task_id == 55
    # A newer model's prediction puts the same task back in the queue (one item, one task).
    store.queue_reviews([_prediction("item-1", version="v2", score=0.3)])
    row = store.due_reviews(10)[0]
    assert (row.model_version, row.status, row.ls_task_id) == ("v2", "pending", 55)


def test_labelled_items_leave_the_queue(store):
    store.record_predictions([_prediction("item-1")], [_item(1)])
    store.add_labels([NewLabel("item-1", "cat", "api")])
    assert store.review_counts()["labelled"] == 1
    store.queue_reviews([_prediction("item-1", version="v2")])
    assert store.due_reviews(10) == []
    assert store.unlabelled_pool() == []


def test_model_versions_events_cursors_jobs(store):
    assert store.latest_model() is None
    store.record_model(
        NewModelVersion(version="v0001", seq=1, backbone_id="b", classes=["cat", "dog"], n_labels=2,
             labels_per_class={"cat": 1, "dog": 1}, max_label_id=2, metrics={"accuracy": 0.5}, head_path="models/v0001.pkl")
    )
    assert store.latest_model().metrics == {"accuracy": 0.5}
    assert store.next_model_seq() == 2
    event_id = store.record_event({"action": "ANNOTATION_CREATED"})
    assert [event.id for event in store.pending_events()] == [event_id]
    store.mark_event(event_id)
    assert store.pending_events() == []
    store.set_cursor("pull", "abc")
    assert store.get_cursor("pull") == "abc"
    store.set_meta("classes", ["a", "b"])
    assert store.get_meta("classes") == ["a", "b"]
    job = store.create_job("retrain")
    store.update_job(job, "done", result={"version": "v0001"})
    assert store.get_job(job).result == {"version": "v0001"}


def _at_once(n_writers: int, work) -> list:
    """Run ``work(k)`` in ``n_writers`` threads released together; their results (an exception re-raised)."""
    barrier = threading.Barrier(n_writers)
    results: list = [None] * n_writers

    def run(k: int) -> None:
        barrier.wait()
        try:
            results[k] = work(k)
        except Exception as exc:  # handed back to the test thread
            results[k] = exc

    threads = [threading.Thread(target=run, args=(k,)) for k in range(n_writers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    for result in results:
        if isinstance(result, Exception):
            raise result
    return results


def test_the_same_label_from_many_writers_at_once_is_recorded_once(store_url):
    """Eight writers (separate stores, as separate workers have) post the same answer together: one label row."""
    stores = [Store.from_url(store_url) for _ in range(8)]
    try:
        stores[0].add_items([_item(1), _item(2)])
        ids = _at_once(8, lambda k: stores[k].add_labels([NewLabel("item-1", "cat", "api", annotator="ann@x"),
                                                          NewLabel("item-2", "dog", "api", annotator="ann@x")]))
        assert len({tuple(row) for row in ids}) == 1  # everyone got the ids of the same two rows
        with stores[0].engine.connect() as conn:
            assert conn.execute(sa.text("SELECT count(*) FROM labels")).scalar_one() == 2
        assert stores[0].count_new_labels(0) == 2
    finally:
        for one in stores:
            one.close()


def test_one_annotation_event_applied_by_two_processes_at_once_changes_one_label(store_url):
    """The webhook job and the pull job (in different workers after a failover) apply the same event together."""
    stores = [Store.from_url(store_url) for _ in range(6)]
    try:
        stores[0].add_items([_item(1)])
        event = LabelEvent("item-1", None, 101, "cat", "ann@x", utcnow(), "set")
        changed = _at_once(6, lambda k: stores[k].apply_label_events([event]))
        assert sum(changed) == 1
        assert [(row.item_id, row.label) for row in stores[0].current_labels()] == [("item-1", "cat")]
        withdrawn = LabelEvent(None, None, 101, None, None, None, "withdrawn")
        assert sum(_at_once(6, lambda k: stores[k].apply_label_events([withdrawn]))) == 1
        assert stores[0].current_labels() == []
    finally:
        for one in stores:
            one.close()


def test_the_same_image_twice_in_one_batch_is_one_review_task(store):
    store.record_predictions([_prediction("item-1", score=0.4), _prediction("item-1", score=0.3)], [_item(1), _item(1)])
    due = store.due_reviews(10)
    assert [(row.item_id, row.score) for row in due] == [("item-1", pytest.approx(0.3))]


def test_the_same_migrations_bring_either_database_to_the_newest_schema_once_for_many_openers(store_url):
    """Four workers open a new store together: the schema is made once, at Alembic's head, on both databases."""
    stores = _at_once(4, lambda k: Store.from_url(store_url))
    try:
        assert {one.schema_version() for one in stores} == {Store.head_version()}
        inspector = sa.inspect(stores[0].engine)
        assert {"items", "labels", "review_tasks", "model_versions", "jobs"} <= set(inspector.get_table_names())
    finally:
        for one in stores:
            one.close()


def test_classes_grow_from_many_writers_at_once_and_none_is_lost(store_url):
    """Eight workers add a class each at the same moment (and one adds a name twice): every one lands once."""
    stores = [Store.from_url(store_url) for _ in range(8)]
    try:
        with pytest.raises(StoreError, match="no class list"):
            stores[0].add_classes(["x"])
        stores[0].set_classes(["cat", "dog"])
        _at_once(8, lambda k: stores[k].add_classes([f"c{k}", "shared"]))
        classes = stores[0].stored_classes()
        assert classes[:2] == ("cat", "dog") and sorted(classes[2:]) == sorted([*(f"c{k}" for k in range(8)), "shared"])
        assert set(stores[0].added_classes()) == set(classes[2:])
        assert stores[0].add_classes(["cat"]) == (list(classes), [])
    finally:
        for one in stores:
            one.close()


def test_only_an_unused_run_time_class_changes(store):
    from app.store import ClassInUseError

    store.set_classes(["cat", "dog"])
    store.add_classes(["bird", "fish"])
    assert store.change_class("bird", "parrot") == ["cat", "dog", "parrot", "fish"]
    assert store.added_classes() == ("parrot", "fish")
    assert store.change_class("fish", None, dry_run=True) == ["cat", "dog", "parrot"]
    assert store.stored_classes() == ("cat", "dog", "parrot", "fish")
    with pytest.raises(ClassInUseError, match="configured class list"):
        store.change_class("cat", None)
    with pytest.raises(ClassInUseError, match="is a class already"):
        store.change_class("parrot", "dog")
    with pytest.raises(StoreError, match="not one of the classes"):
        store.change_class("cow", None)
    store.add_items([_item(1)])
    store.add_labels([NewLabel("item-1", "parrot", "api")])
    with pytest.raises(ClassInUseError, match="1 label"):
        store.change_class("parrot", None)
    store.record_model(NewModelVersion(version="v0001", seq=1, backbone_id="b", classes=["cat", "dog", "parrot", "fish"],
                                       n_labels=2, labels_per_class={}, max_label_id=1, metrics=None, head_path="m.pkl"))  # fmt: skip
    with pytest.raises(ClassInUseError, match="v0001"):
        store.change_class("fish", None)
    assert store.stored_classes() == ("cat", "dog", "parrot", "fish")


def test_unlabelled_columns_list_the_pool_as_unlabelled_pool_does(store):
    store.add_items([_item(n) for n in range(6)] + [NewItem("no-image", "f" * 64, "test/x", "pool", None),
                                                     _item(7, split="served")])
    store.add_labels([NewLabel("item-1", "cat", "api")])
    store.queue_reviews([_prediction("item-2")])
    store.quarantine("item-3", "image file missing")
    columns = store.unlabelled_columns()
    listed = [row for row in store.unlabelled_pool() if row.image_path]
    assert columns.ids == [row.id for row in listed] == ["item-0", "item-2", "item-4", "item-5"]
    assert columns.content_hashes == [row.content_hash for row in listed]
    assert columns.statuses == [row.status for row in listed] == [None, "pending", None, None]
    assert store.unlabelled_columns("served").ids == ["item-7"]
    assert set(store.items_by_id(["item-4", "item-9"])) == {"item-4"}


def test_second_looks_made_before_0006_become_each_items_first_look_and_more_can_follow(store_url):
    """A store at 0005 with a second look (keyed by item then) upgrades in place; downgrading keeps each first look."""
    from alembic import command

    from app.store.migrate import _alembic_config

    engine = sa.create_engine(store_url)
    now = utcnow()
    with engine.begin() as conn:
        command.upgrade(_alembic_config(conn), "0005")
        conn.execute(sa.text("INSERT INTO items (id, content_hash, source, split, created_at) VALUES ('item-1', 'h1', 's', 'pool', :now)"), {"now": now})
        conn.execute(sa.text(
            "INSERT INTO second_looks (item_id, model_version, status, not_for, ls_task_id, attempts, next_attempt_at, created_at, updated_at)"
            " VALUES ('item-1', 'v0001', 'labelled', '[\"1\"]', 42, 1, :now, :now, :now)"), {"now": now})
    engine.dispose()
    store = Store.from_url(store_url)
    try:
        [look] = store.second_looks_of()
        assert (look.item_id, look.look, look.split, look.reason, look.status, look.not_for, look.ls_task_id) == (
            "item-1", 1, "training", "suspect", "labelled", ["1"], 42)
        assert store.queue_second_looks("v0002", {"item-1": ["1", "2"]}, reason="tie", max_looks=2) == 1
        assert [x.look for x in store.second_looks_of()] == [1, 2]
        with store.engine.begin() as conn:
            command.downgrade(_alembic_config(conn), "0005")
            assert conn.execute(sa.text("SELECT item_id, ls_task_id FROM second_looks")).all() == [("item-1", 42)]
            command.upgrade(_alembic_config(conn), "head")
    finally:
        store.close()


def test_unlabelled_rows_are_counted_and_read_by_position_as_the_columns_list_them(store):
    store.add_items([_item(n) for n in range(12)] + [NewItem("no-image", "f" * 64, "test/x", "pool", None),
                                                      _item(20, "served"), _item(21, "served"), _item(22, "holdout")])
    store.add_labels([NewLabel("item-1", "cat", "api"), NewLabel("item-20", "dog", "api")])
    store.queue_reviews([_prediction("item-2")])
    store.quarantine("item-3", "image file missing")
    store.quarantine("item-21", "image unreadable")
    for split, quarantined in [("pool", False), ("pool", True), ("served", True), ("served", False)]:
        columns = store.unlabelled_columns(split, include_quarantined=quarantined)
        n = store.count_unlabelled(split, include_quarantined=quarantined)
        assert n == len(columns.ids)
        positions = sorted({0, n // 2, n - 1}) if n else []
        ids, hashes = store.unlabelled_at(split, positions + [n, n + 5], include_quarantined=quarantined)  # past the end: left out
        assert ids == [columns.ids[p] for p in positions]
        assert hashes == [columns.content_hashes[p] for p in positions]
    assert store.count_unlabelled() == 10  # 12 with an image, less the labelled and the quarantined one
    assert store.unlabelled_at("served", [0], include_quarantined=True) == (["item-21"], [f"{21:064x}"])
    assert store.unlabelled_at("pool", []) == ([], [])
