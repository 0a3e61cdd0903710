"""The jobs and the trainer: outbox delivery through an outage, retrain safety, the review queue."""

from __future__ import annotations

from datetime import timedelta

import pytest

from annotation.models import LabelEvent
from app.worker.scheduler import Scheduler, deliver_outbox, pull_labels, retrain_if_due
from app.store import NewItem, NewLabel, NewModelVersion, NewPrediction, utcnow
from tests.support.images import add_png_item, png
from tests.unit.app.conftest import CLASSES, COLOURS, delivered_as_task


def _pool(services, n_per_class: int = 3) -> list[str]:
    ids = []
    for k, name in enumerate(CLASSES):
        for i in range(n_per_class):
            data = png(COLOURS[name], seed=1000 + 10 * k + i)
            add_png_item(services.store, services.data_dir, f"pool-{name}-{i}", data, "pool", source=f"pool/{name}/{i}")
            ids.append(f"pool-{name}-{i}")
    return ids


def _queue(services, n: int) -> list[str]:
    items = [NewItem(f"s{i}", f"{i:064x}", f"s/{i}", "served", f"images/s{i}.png") for i in range(n)]
    services.store.record_predictions(
        [NewPrediction(f"s{i}", "v0001", "red", 0.4, {"red": 0.4}, "review", "threshold") for i in range(n)], items
    )
    return [item.id for item in items]


def test_outbox_survives_label_studio_down_and_delivers_after_it_returns(services):
    ids = _queue(services, 5)
    services.desk.down = True
    assert deliver_outbox(services) == 0
    row = services.store.get_item(ids[0]).review
    assert row.status == "pending" and row.attempts == 1 and "refused" in row.last_error
    assert deliver_outbox(services) == 0  # backing off: not due yet, no second attempt
    assert services.store.get_item(ids[0]).review.attempts == 1
    services.desk.down = False
    with services.store.engine.begin() as conn:  # time passes
        from app.store.schema import review_tasks

        conn.execute(review_tasks.update().values(next_attempt_at=utcnow() - timedelta(seconds=1)))
    assert deliver_outbox(services) == 5
    assert set(services.desk.tasks) == set(ids)
    assert services.store.review_counts()["sent"] == 5


def test_delivery_sends_image_paths_relative_to_the_images_folder(services):
    _queue(services, 1)
    deliver_outbox(services)
    assert services.desk.tasks["s0"]["request"].image == "s0.png"


def test_a_crash_mid_retrain_leaves_the_last_good_model_serving(services, trained):
    services.store.add_labels([NewLabel(services.store.current_labels()[0].item_id, "green", "api")])

    class Broken:
        def fit(self, X, y):
            raise MemoryError("out of memory while fitting")

    services.trainer.head_factory = lambda previous: Broken()
    with pytest.raises(MemoryError):
        services.trainer.retrain(force=True)
    assert services.models.current.version == "v0001"
    assert [row.version for row in services.store.list_models()] == ["v0001"]
    assert not (services.data_dir / "models" / "v0002.pkl").exists()


def test_retrain_waits_for_n_new_labels_then_swaps_and_refreshes_the_queue(services, trained):
    _pool(services)
    assert retrain_if_due(services) is None  # no new labels
    first = services.store.current_labels()[0]
    services.store.add_labels([NewLabel(first.item_id, first.label, "api", f"annotator-{i}") for i in range(2)])
    assert retrain_if_due(services) is None  # 2 < retrain_after_labels (3)
    services.store.add_labels([NewLabel(first.item_id, first.label, "api", "annotator-2")])
    result = retrain_if_due(services)
    assert result["version"] == "v0002"
    assert services.models.current.version == "v0002"
    assert result["queued_for_review"] == services.settings.service.review_batch_size
    pending = services.store.due_reviews(100)
    assert len(pending) == 2 and all(row.model_version == "v0002" for row in pending)


def test_a_restart_reloads_the_last_good_model(services, trained, settings):
    from app.core.serving import load_last_good

    (services.data_dir / "models" / "v0002.pkl").write_bytes(b"not a pickle")
    services.store.record_model(
        NewModelVersion(version="v0002", seq=2, backbone_id="fake-8x8", classes=list(CLASSES), n_labels=6, labels_per_class={},
             max_label_id=6, metrics=None, head_path="models/v0002.pkl")
    )
    model = load_last_good(services.store.list_models(), services.data_dir, "fake-8x8")
    assert model.version == "v0001"


def test_pull_labels_applies_what_webhooks_missed_and_keeps_a_cursor(services):
    services.store.add_items([NewItem("p1", "h1", "pool/1", "pool", "images/p1.png")])
    delivered_as_task(services.store, "p1", 3)
    services.desk.events = [LabelEvent("p1", 3, 77, "red", "1", utcnow(), "set"), LabelEvent("p1", 3, 78, "mauve", "1", utcnow(), "set")]
    assert pull_labels(services) == 1  # the label outside the class list is ignored
    services.desk.events.append(LabelEvent("p1", 3, 79, "green", "2", utcnow(), "set"))
    assert pull_labels(services) == 1  # only the annotation the stored cursor has not seen
    first, second = services.desk.cursors
    assert first is None and set(second.seen) == {77, 78}
    services.desk.down = True
    from annotation.errors import AnnotationError

    with pytest.raises(AnnotationError):
        pull_labels(services)


def test_one_scheduler_with_explicit_ids_and_a_retrain_request(services, trained):
    jobs = Scheduler(services)
    jobs.start()
    try:
        ids = {job.id for job in jobs.scheduler.get_jobs()}
        assert {"deliver-outbox", "process-webhooks", "pull-labels", "retrain-check", "refresh-queue"} <= ids
        assert all(job.max_instances == 1 and job.coalesce for job in jobs.scheduler.get_jobs())
        job_id = jobs.submit_retrain(force=True)
        import time

        deadline = time.monotonic() + 20
        while services.store.get_job(job_id).status in ("queued", "running"):
            assert time.monotonic() < deadline, "retrain job did not finish"
            time.sleep(0.05)
        assert services.store.get_job(job_id).status == "done"
        assert services.models.current.version == "v0002"
    finally:
        jobs.shutdown()


def test_apschedulers_still_running_warning_is_not_printed_every_second_of_a_retrain(caplog):
    import logging

    import app.worker.scheduler  # noqa: F401  (installs the filter)

    scheduler_log = logging.getLogger("apscheduler.scheduler")
    with caplog.at_level(logging.INFO):
        scheduler_log.warning('Execution of job "%s" skipped: maximum number of running instances reached (%d)', "run-queued-jobs", 1)
        scheduler_log.warning("Run time of job %s was missed", "other")
    assert [record.getMessage() for record in caplog.records] == ["Run time of job other was missed"]
