"""The reserved holdout through the real Label Studio: its tasks arrive blind, and their answers measure.

A juicer on real Fashion-MNIST images with no labelled holdout (one seed label per class and a pool): the
first refresh reserves a holdout from the pool and queues its first items; in Label Studio those tasks carry
no prediction (nothing pre-selected to anchor the annotator) while the active picks carry the model's guess.
An annotator's answer on a holdout task comes back by webhook, lands in the holdout, never trains, and the
stored version is re-measured on it.
"""

from __future__ import annotations

import pytest

from tests.support.in_process import in_process_juicer
from tests.support.wait import poll

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def juicer(label_studio, backbone, tmp_path_factory):
    from learner.datasets import load_fashion_mnist

    dataset = load_fashion_mnist("/usr/share/datasets/fashion-mnist", per_class_limit=12, seed=4)
    with in_process_juicer(
        label_studio, backbone, dataset, title="juicer holdout", webhook_secret="it-secret-456",
        service={"retrain_after_labels": 1000, "review_batch_size": 10, "deliver_interval_s": 3600,
                 "holdout": {"min_labels": 6, "share": 0.1, "max_pool_share": 0.2}},
        seed={"n_pool": 100, "n_holdout": 0, "seed": 5},  # no labelled holdout: juicer reserves one
        store_url=f"sqlite:///{tmp_path_factory.mktemp('holdout-store')}/juicer.db",
    ) as running:  # fmt: skip
        yield running.services, running.truth


def test_holdout_tasks_arrive_in_label_studio_without_a_prediction_and_their_answers_measure(juicer):
    from annotation.reviews import BLIND_SCORE
    from app.store import HOLDOUT_VERSION
    from app.worker.scheduler import deliver_outbox, process_webhook_events

    services, truth = juicer
    first = services.trainer.retrain(reason="first model", force=True)
    assert first.version is not None and first.holdout_accuracy is None  # nothing labelled in the holdout yet
    reserved = services.store.reserved_holdout()
    assert len(reserved) == 20  # a fifth of the 100-item pool (20 per class would be 200)
    assert set(services.store.item_splits(reserved).values()) == {"holdout"}
    due = services.store.due_reviews(100)
    blind = {row.item_id for row in due if row.model_version == HOLDOUT_VERSION}
    assert len(blind) == 6 and blind <= set(reserved)  # min_labels first
    assert deliver_outbox(services) == len(due)

    tasks = {task.item_id: task for task in services.desk.open_tasks(services.project)}
    assert blind <= set(tasks)
    for item_id in blind:  # as Label Studio holds them: only an empty placeholder below every guess, nothing pre-selected
        assert tasks[item_id].predicted_label is None and tasks[item_id].score == BLIND_SCORE
        assert tasks[item_id].model_version == first.version
    guessed = set(tasks) - blind
    assert guessed and all(tasks[i].model_version == first.version and tasks[i].predicted_label for i in guessed)
    item_id = min(blind)
    raw = services.desk.client.request("GET", f"/api/tasks/{tasks[item_id].task_id}", "reading a holdout task").json()
    assert [p["result"] for p in raw["predictions"]] == [[]] and raw["data"]["kind"] == "holdout"
    # Label Studio's own stream ("Label All Tasks") serves the blind tasks first, before every active pick
    assert services.desk.next_task(services.project).item_id in blind

    services.desk.submit_annotation(tasks[item_id].task_id, truth[item_id])
    poll(lambda: len(services.store.pending_events()) >= 1, 30, "the holdout answer's webhook")
    assert process_webhook_events(services) == 1
    assert [(row.item_id, row.label) for row in services.store.current_labels(holdout=True)] == [(item_id, truth[item_id])]
    assert services.trainer.new_labels() == 0  # a holdout label never trains
    assert services.trainer.remeasure() == [first.version]
    assert services.store.get_model(first.version).metrics["n"] == 1
