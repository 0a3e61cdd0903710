"""The holdout juicer reserves from the pool and annotators label blind (issue 19, item 2)."""

from __future__ import annotations

import numpy as np
import pytest

from annotation.models import LabelEvent, ReviewRequest
from annotation.reviews import task_body
from app.core.holdout import holdout_tasks_to_queue, per_refresh
from app.http.reports import TOO_SMALL, forecast_points, report_points, report_table
from app.store import HOLDOUT_VERSION, NewItem, NewLabel, NewModelVersion, Store, utcnow
from app.store.holdout import RESERVATION_KEY
from app.worker.scheduler import deliver_outbox, refresh_queue
from config.settings import HoldoutSettings
from tests.support.images import add_png_item, png
from tests.unit.app.conftest import CLASSES, COLOURS


def _bare_pool(store: Store, n: int, start: int = 0) -> list[str]:
    ids = [f"item-{i:05d}" for i in range(start, start + n)]
    store.add_items([NewItem(item_id, f"{i:064x}", item_id, "pool") for i, item_id in enumerate(ids, start)])
    return ids


def _pool(services, n_per_class: int) -> list[str]:
    ids = []
    for k, name in enumerate(CLASSES):
        for i in range(n_per_class):
            item_id = f"pool-{name}-{i}"
            add_png_item(services.store, services.data_dir, item_id, png(COLOURS[name], seed=2000 + 100 * k + i), "pool")
            ids.append(item_id)
    return ids


def _holdout_on(services, **settings) -> HoldoutSettings:
    holdout = HoldoutSettings(**{"min_labels": 3, "share": 0.5, "max_pool_share": 0.5, **settings})
    services.trainer.service = services.trainer.service.model_copy(update={"holdout": holdout})
    return holdout


def _label_event(item_id: str, task_id: int, annotation_id: int, label: str) -> LabelEvent:
    return LabelEvent(item_id, task_id, annotation_id, label, "7", utcnow(), "set")


# -- reservation ------------------------------------------------------------------------------------------
def test_reservation_is_seeded_recorded_and_idempotent(tmp_path):
    store = Store.open(tmp_path)
    _bare_pool(store, 200)
    moved = store.reserve_holdout(size=30, seed=7, max_pool_share=0.5)
    assert len(moved) == 30 and set(store.item_splits(moved).values()) == {"holdout"}
    assert store.get_meta(RESERVATION_KEY) == {"seed": 7, "item_ids": moved}
    assert store.reserve_holdout(size=30, seed=7, max_pool_share=0.5) == []  # again: nothing moves
    other = Store.open(tmp_path / "other")
    _bare_pool(other, 200)
    assert other.reserve_holdout(size=30, seed=7, max_pool_share=0.5) == moved  # the seed fixes the draw
    assert set(other.reserve_holdout(size=60, seed=8, max_pool_share=0.5)).isdisjoint(moved)
    store.close(), other.close()


def test_reservation_is_a_uniform_draw_over_the_pool(tmp_path):
    store = Store.open(tmp_path)
    _bare_pool(store, 1000)
    chosen = []
    for seed in range(20):  # the draw's own keys, as reserve_holdout orders them, for several seeds
        from app.store.holdout import reservation_key

        chosen += sorted(range(1000), key=lambda i: reservation_key(seed, f"item-{i:05d}"))[:100]
    counts = np.bincount(np.array(chosen) // 100, minlength=10)  # ten blocks of the id order
    expected = len(chosen) / 10
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    assert chi2 < 27.9  # chi-square, 9 degrees of freedom, p = 0.001
    store.close()


def test_reservation_tops_up_as_the_pool_grows_within_its_share(tmp_path):
    store = Store.open(tmp_path)
    _bare_pool(store, 40)
    first = store.reserve_holdout(size=30, seed=0, max_pool_share=0.2)
    assert len(first) == 8  # a fifth of a 40-item pool, not 30
    _bare_pool(store, 160, start=40)
    more = store.reserve_holdout(size=30, seed=0, max_pool_share=0.2)
    assert len(more) == 22 and set(more).isdisjoint(first)
    assert store.reserved_holdout() == first + more
    assert store.holdout_counts().n_items == 30


def test_labelled_or_queued_pool_items_are_never_reserved(tmp_path):
    store = Store.open(tmp_path)
    ids = _bare_pool(store, 20)
    store.add_labels([NewLabel(ids[0], "red", "api")])
    from app.store import NewPrediction

    store.queue_reviews([NewPrediction(ids[1], "none", "", 0.0, {}, "review", "cold-start")])
    moved = store.reserve_holdout(size=18, seed=0)
    assert len(moved) == 18 and ids[0] not in moved and ids[1] not in moved


def test_a_given_labelled_holdout_is_used_instead(services, trained):
    holdout = _holdout_on(services)
    for k, name in enumerate(CLASSES):  # the demo's, or one the user imported: labelled, holdout
        item_id = f"given-{name}"
        add_png_item(services.store, services.data_dir, item_id, png(COLOURS[name], seed=3000 + k), "holdout")
        services.store.add_labels([NewLabel(item_id, name, "dataset")])
    _pool(services, 4)
    refresh_queue(services)
    assert services.store.reserved_holdout() == []
    assert services.store.holdout_counts().n_items == holdout.min_labels


# -- never queried, never trained, delivered blind ---------------------------------------------------------
def test_holdout_items_are_queued_blind_and_never_picked_by_the_strategy(services, trained):
    _holdout_on(services)
    _pool(services, 4)
    refresh_queue(services)
    reserved = set(services.store.reserved_holdout())
    assert len(reserved) == 6  # half of a 12-item pool, the test's max_pool_share
    due = services.store.due_reviews(100)
    holdout_rows = [row for row in due if row.model_version == HOLDOUT_VERSION]
    active_rows = [row for row in due if row.model_version != HOLDOUT_VERSION]
    assert {row.item_id for row in holdout_rows} <= reserved and len(holdout_rows) == 3  # min_labels first
    assert active_rows and not reserved & {row.item_id for row in active_rows}
    assert deliver_outbox(services) == len(due)
    for row in holdout_rows:
        request = services.desk.tasks[row.item_id]["request"]
        assert request.blind and request.label is None
    assert not any(services.desk.tasks[row.item_id]["request"].blind for row in active_rows)


def test_a_blind_task_carries_no_prediction_and_says_it_is_holdout():
    guessed = ReviewRequest("a", "a.png", "red", 0.6, "v0003")
    blind = ReviewRequest("b", "b.png", None, 0.0, HOLDOUT_VERSION, blind=True)
    assert task_body("/data/a.png", guessed)["predictions"][0]["model_version"] == "v0003"
    body = task_body("/data/b.png", blind)
    assert "predictions" not in body and body["data"] == {"image": "/data/b.png", "item_id": "b", "kind": "holdout"}


def test_annotators_holdout_labels_are_accepted_for_delivered_holdout_tasks_only_and_never_train(services, trained):
    _holdout_on(services)
    _pool(services, 4)
    refresh_queue(services)
    deliver_outbox(services)
    delivered = [item for item, task in services.desk.tasks.items() if task["request"].blind]
    undelivered = [item for item in services.store.reserved_holdout() if item not in delivered]
    assert delivered and undelivered
    item = delivered[0]
    task_id = services.desk.tasks[item]["task_id"]
    n_training = len(services.store.current_labels())
    assert services.store.apply_label_events([_label_event(item, task_id, 901, "red")]) == 1
    assert services.store.apply_label_events([_label_event(undelivered[0], 99, 902, "red")]) == 0  # never sent
    assert [row.item_id for row in services.store.current_labels(holdout=True)] == [item]
    assert len(services.store.current_labels()) == n_training  # the holdout label does not train
    assert services.trainer.new_labels() == 0
    result = services.trainer.retrain(force=True, refresh_queue=False)
    assert result.n_labels == n_training and result.holdout_accuracy is not None


def test_a_given_holdout_item_not_delivered_blind_still_refuses_annotators_labels(services, trained):
    add_png_item(services.store, services.data_dir, "given", png(COLOURS["red"], seed=3100), "holdout")
    services.store.add_labels([NewLabel("given", "red", "dataset")])
    assert services.store.apply_label_events([_label_event("given", 5, 903, "blue")]) == 0
    assert services.store.current_labels(holdout=True)[0].label == "red"


# -- the interleaving rate -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("n_labelled", "n_open", "n_available", "expected"),
    [
        (0, 0, 500, 30),  # below the minimum: enough open tasks to reach it, at once
        (10, 15, 500, 5),  # open tasks count
        (29, 0, 500, 2),  # the minimum nearly in: the share takes over
        (30, 0, 500, 2),  # then about 1 in 10 of a 20-task refresh
        (200, 2, 500, 0),  # annotators have not answered the last ones: none piles up
        (0, 0, 4, 4),  # no more than there are
    ],
)
def test_holdout_tasks_get_priority_until_the_minimum_then_a_small_share(n_labelled, n_open, n_available, expected):
    share = per_refresh(HoldoutSettings(share=0.1), review_batch_size=20)
    assert share == 2
    assert holdout_tasks_to_queue(n_labelled, n_open, n_available, 30, share) == expected


def test_the_default_size_is_twenty_per_class_capped():
    assert HoldoutSettings().target_size(10) == 200 and HoldoutSettings().target_size(50) == 500
    assert HoldoutSettings(size=40).target_size(10) == 40


# -- re-measured when the holdout grows; "too small" in the report ------------------------------------------
def test_every_version_is_remeasured_on_cached_embeddings_when_the_holdout_grows(services, trained):
    _holdout_on(services)
    _pool(services, 4)
    refresh_queue(services)
    deliver_outbox(services)
    blind = [item for item, task in services.desk.tasks.items() if task["request"].blind]
    truth = {item: item.split("-")[1] for item in blind}
    first = blind[0]
    services.store.apply_label_events([_label_event(first, services.desk.tasks[first]["task_id"], 910, truth[first])])
    services.trainer.retrain(force=True, refresh_queue=False)
    # v0001 had no holdout when trained; v0002's retrain measured both on the one label there is
    assert [row.metrics["n"] for row in services.store.list_models()] == [1, 1]
    for k, item in enumerate(blind[1:]):
        services.store.apply_label_events([_label_event(item, services.desk.tasks[item]["task_id"], 920 + k, truth[item])])
    calls = services.embeddings.backbone.calls
    updated = services.trainer.remeasure()
    assert updated == ["v0001", "v0002"]
    rows = services.store.list_models()
    assert {row.metrics["n"] for row in rows} == {len(blind)}
    assert len({row.metrics["holdout_key"] for row in rows}) == 1  # like with like
    assert services.embeddings.backbone.calls == calls  # stored heads on cached embeddings: no backbone run
    assert services.trainer.remeasure() == []  # nothing changed since


def _version(version: str, n_labels: int, n_holdout: int, accuracy: float) -> NewModelVersion:
    metrics = {"accuracy": accuracy, "n": n_holdout, "thresholds": []}
    return NewModelVersion(version=version, seq=int(version[1:]), backbone_id="fake", classes=list(CLASSES), n_labels=n_labels,
                           labels_per_class={}, max_label_id=0, head_path="x.pkl", metrics=metrics)


def test_the_report_says_the_holdout_is_too_small_below_the_minimum(tmp_path):
    store = Store.open(tmp_path)
    for k, n_labels in enumerate((10, 20, 40, 80)):
        store.record_model(_version(f"v{k + 1:04d}", n_labels, 12, 0.5 + 0.1 * k))
    points = report_points(store.list_models(), min_holdout=30)
    assert all(p["holdout_too_small"] and p["holdout_n"] == 12 for p in points)
    table = report_table(points)
    assert TOO_SMALL in table and "holdout n" in table
    assert forecast_points(points) == []  # nothing measured enough to forecast from
    measured = report_points(store.list_models(), min_holdout=10)
    assert not any(p["holdout_too_small"] for p in measured) and len(forecast_points(measured)) == 4
    assert TOO_SMALL not in report_table(measured)
