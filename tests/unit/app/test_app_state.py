"""The state machine loses nothing and counts nothing twice: deliveries, label events, holdout, jobs."""

from __future__ import annotations

import base64
from datetime import timedelta

from annotation.errors import AnnotationError
from app.worker.scheduler import Scheduler, deliver_outbox
from annotation.models import LabelEvent
from app.store import NewItem, NewPrediction, utcnow
from app.store.schema import review_tasks
from tests.support.images import add_png_item, png
from tests.unit.app.conftest import COLOURS


def _queue(services, n: int) -> list[str]:
    items = [NewItem(f"s{i}", f"{i:064x}", f"s/{i}", "served", f"images/s{i}.png") for i in range(n)]
    services.store.record_predictions(
        [NewPrediction(f"s{i}", "v0001", "red", 0.4, {"red": 0.4}, "review", "threshold") for i in range(n)], items
    )
    return [item.id for item in items]


def _time_passes(services) -> None:
    with services.store.engine.begin() as conn:
        conn.execute(review_tasks.update().values(next_attempt_at=utcnow() - timedelta(seconds=1)))


class RefusesOne:
    """A desk that refuses one item (as Label Studio refuses a task it cannot import) and takes the rest."""

    def __init__(self, desk, bad: str) -> None:
        self.desk, self.bad = desk, bad

    def send_for_review(self, project, requests):
        if any(request.item_id == self.bad for request in requests):
            raise AnnotationError(f"task for {self.bad} refused: bad image", retryable=False)
        return self.desk.send_for_review(project, requests)


# -- deliveries -------------------------------------------------------------------------------------
def test_one_refused_item_does_not_hold_back_its_batch(services):
    ids = _queue(services, 4)
    services.desk = RefusesOne(services.desk, ids[1])
    assert deliver_outbox(services) == 3
    assert services.store.get_item(ids[1]).review.status == "pending"
    assert services.store.get_item(ids[1]).review.attempts == 1
    assert {services.store.get_item(i).review.status for i in ids if i != ids[1]} == {"sent"}


def test_the_backoff_exponent_is_capped(services):
    [item] = _queue(services, 1)
    with services.store.engine.begin() as conn:
        conn.execute(review_tasks.update().values(attempts=5000))
    services.desk.down = True
    services.settings.service.delivery_max_attempts = 10_000
    deliver_outbox(services)  # 2 ** 5000 seconds would overflow a timedelta
    review = services.store.get_item(item).review
    assert review.attempts == 5001 and review.status == "pending"


def test_after_the_retry_limit_a_delivery_is_failed_visible_and_retried_on_request(services, client):
    [item] = _queue(services, 1)
    services.desk.down = True
    for _ in range(services.settings.service.delivery_max_attempts):
        _time_passes(services)
        deliver_outbox(services)
    body = client.get(f"/v1/items/{item}").json
    assert body["review"]["status"] == "failed" and "refused" in body["review"]["last_error"]
    assert 'juicer_review_tasks{status="failed"} 1.0' in client.get("/metrics").get_data(as_text=True)
    services.desk.down = False
    response = client.post("/v1/reviews/retry")
    assert response.status_code == 200 and response.json["requeued"] == 1
    assert deliver_outbox(services) == 1
    assert client.get(f"/v1/items/{item}").json["review"]["status"] == "sent"


# -- label events -----------------------------------------------------------------------------------
def _item(services, item_id: str = "p1", split: str = "pool") -> str:
    data = png(COLOURS["red"], seed=hash(item_id) % 1000)
    add_png_item(services.store, services.data_dir, item_id, data, split, file_stem=item_id)
    return item_id


def test_a_withdrawal_counts_as_a_change(services, trained):
    services.store.apply_label_events([LabelEvent(_item(services), None, 41, "red", "1", utcnow(), "set")])
    trained.trainer.retrain(force=True)
    assert trained.trainer.new_labels() == 0
    services.store.apply_label_events([LabelEvent(None, None, 41, None, "", utcnow(), "withdrawn")])
    assert trained.trainer.new_labels() == 1
    assert trained.trainer.retrain().version is not None  # not skipped: the model must forget that label


def test_a_withdrawal_while_the_model_fits_still_counts_as_a_change(services, trained, monkeypatch):
    """The fit reads the labels, then takes seconds: a label withdrawn meanwhile is not in it, so it is a change."""
    services.store.apply_label_events([LabelEvent(_item(services), None, 42, "red", "1", utcnow(), "set")])
    read_labels = services.store.current_labels

    def read_then_withdraw(**kwargs):
        rows = read_labels(**kwargs)
        if not kwargs:  # the training labels (the holdout is read with holdout=True)
            services.store.apply_label_events([LabelEvent(None, None, 42, None, "", utcnow(), "withdrawn")])
        return rows

    monkeypatch.setattr(services.store, "current_labels", read_then_withdraw)
    assert trained.trainer.retrain(force=True).version is not None  # fitted with "42", withdrawn meanwhile
    monkeypatch.setattr(services.store, "current_labels", read_labels)
    assert trained.trainer.new_labels() == 1  # the model must be retrained without it
    assert trained.trainer.retrain().version is not None


def test_a_replayed_stale_event_does_not_overwrite_a_newer_label(services):
    item = _item(services)
    now = utcnow()
    services.store.apply_label_events([LabelEvent(item, None, 7, "red", "1", now - timedelta(minutes=5), "set")])
    services.store.apply_label_events([LabelEvent(item, None, 7, "blue", "1", now, "set")])
    assert services.store.apply_label_events([LabelEvent(item, None, 7, "red", "1", now - timedelta(minutes=5), "set")]) == 0
    assert services.store.get_item(item).label.label == "blue"


def test_the_same_label_posted_ten_times_is_one_label(client, services, trained):
    item = _item(services)
    before = services.trainer.new_labels()
    for _ in range(10):
        response = client.post("/v1/labels", json={"labels": [{"item_id": item, "label": "red"}] * 2})
        assert response.status_code == 201, response.json
    assert services.trainer.new_labels() == before + 1
    assert len({entry["label_id"] for entry in response.json["labels"]}) == 1


def test_disagreeing_annotators_are_both_kept_and_flagged(client, services):
    item = _item(services)
    services.store.apply_label_events(
        [LabelEvent(item, None, 1, "red", "1", utcnow(), "set"), LabelEvent(item, None, 2, "blue", "2", utcnow(), "set")]
    )
    body = client.get("/v1/items?conflicts=true").json
    assert [row["id"] for row in body["items"]] == [item]
    assert sorted(label["label"] for label in body["items"][0]["labels"]) == ["blue", "red"]
    assert services.store.get_item(item).label.label == "blue"  # the merge rule: the newest answer trains
    services.store.apply_label_events([LabelEvent(None, None, 2, None, "", utcnow(), "withdrawn")])
    assert client.get("/v1/items?conflicts=true").json["items"] == []


def test_holdout_items_refuse_new_labels(client, services):
    item = _item(services, "h1", split="holdout")
    response = client.post("/v1/labels", json={"labels": [{"item_id": item, "label": "red"}]})
    assert response.status_code == 409 and response.mimetype == "application/problem+json"
    assert response.json["type"].endswith("holdout-item")
    assert services.store.apply_label_events([LabelEvent(item, None, 9, "red", "1", utcnow(), "set")]) == 0
    assert services.store.get_item(item).label is None


def test_labels_are_validated_whole_before_anything_is_written(client, services):
    image = base64.b64encode(png(COLOURS["red"], seed=77)).decode()
    response = client.post(
        "/v1/labels", json={"labels": [{"image": image, "label": "red"}, {"item_id": "no-such-item", "label": "red"}]}
    )
    assert response.status_code == 404, response.json
    assert services.store.count_items() == {}  # the new image of the same body was not stored either


# -- jobs -------------------------------------------------------------------------------------------
def test_jobs_left_queued_or_running_by_a_crash_are_failed_at_start(services):
    queued = services.store.create_job("retrain")
    running = services.store.create_job("retrain")
    services.store.update_job(running, "running")
    jobs = Scheduler(services)
    jobs.start()
    try:
        for job_id in (queued, running):
            job = services.store.get_job(job_id)
            assert job.status == "failed" and "restart" in job.error
    finally:
        jobs.shutdown()


def test_no_job_is_dropped_by_a_misfire_grace_time(services):
    jobs = Scheduler(services)
    assert jobs.scheduler._job_defaults["misfire_grace_time"] is None
