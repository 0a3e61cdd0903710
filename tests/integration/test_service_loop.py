"""The whole loop through the real Label Studio, the real backbone and real Fashion-MNIST images.

One juicer instance for the module (its images live under the session Label Studio's files root): seed 1
labelled image per class, predictions, review tasks in Label Studio, annotations posted as the editor posts
them, webhooks into the running service, a retrain through ``POST /v1/retrain``; then Label Studio is
stopped while review tasks are routed, and they are delivered once it is back.

The module runs twice: on the SQLite store and on a real PostgreSQL (marked ``postgres``).
"""

from __future__ import annotations

import base64

import httpx
import pytest

from tests.support.in_process import in_process_juicer
from tests.support.wait import poll

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def dataset(backbone):
    from learner.datasets import load_fashion_mnist

    return load_fashion_mnist("/usr/share/datasets/fashion-mnist", per_class_limit=40, seed=3)


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def store_url(request):
    """None (SQLite in the data folder) or a fresh PostgreSQL database, for the whole module."""
    return None if request.param == "sqlite" else request.getfixturevalue("postgres").new_database()


@pytest.fixture(scope="module")
def juicer(label_studio, backbone, dataset, store_url):
    """A running juicer: services, its HTTP server on a free port (for Label Studio's webhooks), a test client."""
    with in_process_juicer(
        label_studio, backbone, dataset, title="juicer loop", webhook_secret="it-secret-123", store_url=store_url,
        service={"retrain_after_labels": 1000, "review_batch_size": 30, "deliver_interval_s": 3600,
                 "retry_backoff_s": 0.2, "retry_backoff_max_s": 1},
        seed={"n_pool": 120, "n_holdout": 200, "seed": 5},
    ) as running:  # fmt: skip
        yield running.services, running.client, running.truth


@pytest.fixture
def serving(juicer):
    """The module's juicer with a model serving (whichever test runs first trains it)."""
    services = juicer[0]
    if services.models.current is None:
        services.trainer.retrain(reason="a model to serve")
    return juicer


def _png_of(services, item_id: str) -> bytes:
    from app.core.datadir import image_file

    return image_file(services.data_dir, services.store.get_item(item_id).image_path).read_bytes()


def test_the_loop_improves_the_model_with_labels_from_label_studio(juicer):
    from app.worker.scheduler import Scheduler, deliver_outbox, process_webhook_events, pull_labels

    services, client, truth = juicer
    first = services.trainer.retrain(reason="first model", force=True)
    assert first.version is not None and first.n_labels == 10  # no other test adds labels
    assert services.store.review_counts()["pending"] >= 30  # the query strategy chose a batch from the pool

    pool_ids = [row.id for row in services.store.items_of_split("pool")][:4]
    images = [base64.b64encode(_png_of(services, item_id)).decode() for item_id in pool_ids]
    response = client.post("/v1/predict", json={"images": images})
    assert response.status_code == 200, response.json
    predictions = response.json["predictions"]
    assert [p["item_id"] for p in predictions] == pool_ids  # the same bytes are the same item
    assert all(p["model_version"] == first.version and set(p["probabilities"]) == set(services.classes) for p in predictions)

    delivered = deliver_outbox(services)
    assert delivered >= 30
    assert services.store.review_counts()["pending"] == 0

    # An annotator works through the queue (least certain first) and answers with the ground truth.
    annotated = 0
    while annotated < 40:
        task = services.desk.next_task(services.project)
        if task is None:
            break
        assert task.predicted_label in services.classes and task.model_version == first.version
        services.desk.submit_annotation(task.task_id, truth[task.item_id])
        annotated += 1
    assert annotated >= 30

    # Label Studio posted a webhook per annotation into the running service; a job turns them into labels.
    poll(lambda: len(services.store.pending_events()) >= annotated, 30, f"{annotated} webhook events")
    assert process_webhook_events(services) == annotated
    assert pull_labels(services) == 0  # the safety net finds nothing the webhooks missed
    assert services.trainer.new_labels() == annotated

    jobs = Scheduler(services)
    jobs.start()
    response = client.post("/v1/retrain")
    assert response.status_code == 202
    status_url = response.json["status_url"]
    job = poll(lambda: (j := client.get(status_url).json)["status"] in ("done", "failed") and j, 120, "the retrain job")
    assert job["status"] == "done", job
    jobs.shutdown()

    points = client.get("/v1/report").json["points"]
    before, after = points[-2:]
    assert before["model_version"] == first.version and after["model_version"] != first.version
    assert after["n_labels"] == before["n_labels"] + annotated
    assert after["holdout_accuracy"] > before["holdout_accuracy"]
    assert client.get("/v1/models/current").json["model_version"] == after["model_version"]
    assert client.get("/readyz").status_code == 200


def test_label_studio_down_during_routing_loses_nothing(serving, label_studio, monkeypatch):
    from app.worker.scheduler import deliver_outbox

    services, client, truth = serving
    monkeypatch.setattr(services.settings.service, "decision_threshold", 1.0)  # all but certain ones go to review
    pool = [row.id for row in services.store.unlabelled_pool() if row.status is None][:5]
    assert len(pool) == 5
    label_studio.launcher.stop()
    try:
        images = [base64.b64encode(_png_of(services, item_id)).decode() for item_id in pool]
        response = client.post("/v1/predict", json={"images": images})
        assert response.status_code == 200  # predictions do not need Label Studio
        reviewed = {p["item_id"] for p in response.json["predictions"] if p["decision"] == "review"}
        assert services.trainer.refresh_review_queue() > 0  # the query strategy routes more pool items
        routed = [row.item_id for row in services.store.due_reviews(1000)]
        assert reviewed <= set(routed) and len(routed) >= 5
        assert deliver_outbox(services) == 0
        rows = [services.store.get_item(item_id).review for item_id in routed]
        assert all(row.status == "pending" and row.attempts >= 1 and row.last_error for row in rows)
        ready = client.get("/readyz")  # still serving predictions: ready, with Label Studio reported degraded
        assert ready.status_code == 200 and ready.json["status"] == "degraded"
    finally:
        label_studio.launcher.start(wait=True, timeout_s=180)
    def delivered_everything() -> bool:
        deliver_outbox(services)
        return services.store.review_counts()["pending"] == 0

    poll(delivered_everything, 30, "delivery after restart")
    for item_id in routed:
        review = services.store.get_item(item_id).review
        assert review.status == "sent" and review.ls_task_id
        task = httpx.get(
            f"{label_studio.url}/api/tasks/{review.ls_task_id}", headers={"Authorization": f"Token {label_studio.token}"}, timeout=10
        ).json()
        assert task["data"]["item_id"] == item_id


def test_juicer_serve_setup_reloads_the_last_good_model_and_prints_the_urls(serving, label_studio, lite0_backbone_dir, capsys, free_port):
    """`juicer serve` on the same data folder: no second demo, the newest model reloaded, webhook registered."""
    import argparse

    from app.cli.commands import serve
    from config import load_settings

    services, _, _ = serving
    newest = services.store.list_models()[-1].version
    settings = load_settings(
        environ={},
        data_dir=services.data_dir,
        learner={"backbone": str(lite0_backbone_dir)},
        service={"port": free_port()},
        label_studio={"url": label_studio.url, "token": label_studio.token, "webhook_secret": "it-secret-123",
                      "project_title": services.settings.label_studio.project_title},
        store={"url": services.settings.store.url},
    )
    args = argparse.Namespace(no_demo=False, demo_pool=None, holdout=None, host=None, port=None, workers=None,
                              keep_label_studio=False, setup_only=True)
    assert serve.run(args, settings) == 0
    out = capsys.readouterr().out
    assert "not seeding the demo again" in out
    assert f"serving the last good model {newest}" in out
    assert f"http://127.0.0.1:{settings.service.port}/report" in out
    assert label_studio.username in out or settings.label_studio.username in out
