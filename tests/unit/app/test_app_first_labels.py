"""The first labels: typical picks queued before any model, and the semi-supervised head as the default."""

from __future__ import annotations

import base64

from app.worker.scheduler import deliver_outbox, refresh_queue
from app.core.training import COLD_START_VERSION, default_head_factory
from learner.semi import SemiSupervisedHead
from tests.support.images import png
from tests.unit.app.conftest import CLASSES, COLOURS


def _post_items(client, per_class: int = 4) -> None:
    images = [base64.b64encode(png(COLOURS[name], seed=500 + 10 * k + i)).decode()
              for k, name in enumerate(CLASSES) for i in range(per_class)]
    for start in range(0, len(images), 4):  # max_images_per_request is 4 in the test settings
        assert client.post("/v1/items", json={"images": images[start:start + 4]}).status_code == 201


def test_items_posted_into_an_empty_service_queue_typical_picks(client, services):
    _post_items(client)
    assert services.models.current is None
    assert refresh_queue(services) == services.settings.service.review_batch_size  # the default strategy is auto
    due = services.store.due_reviews(100)
    assert len(due) == 2 and {row.model_version for row in due} == {COLD_START_VERSION}
    assert refresh_queue(services) == 0  # the first picks are with the annotators: nothing more until a model
    assert deliver_outbox(services) == 2
    requests = [task["request"] for task in services.desk.tasks.values()]
    assert all(request.label is None for request in requests)  # no model: no pre-selected choice


def test_before_any_model_only_strategies_that_need_none_queue_picks(client, services):
    _post_items(client)
    service = services.trainer.service
    services.trainer.service = service.model_copy(update={"query_strategy": "margin"})  # needs a model
    assert refresh_queue(services) == 0
    services.trainer.service = service.model_copy(update={"query_strategy": "random"})  # needs none
    assert refresh_queue(services) == service.review_batch_size
    assert len(services.store.due_reviews(100)) == service.review_batch_size


def test_the_default_head_learns_from_the_pool_as_unlabelled_rows(client, services, trained):
    _post_items(client)
    services.trainer.head_factory = lambda previous: default_head_factory(None)  # not the fixture's logistic head
    result = services.trainer.retrain(force=True, refresh_queue=False)
    head = services.models.current.head
    assert isinstance(head, SemiSupervisedHead)
    assert head.n_unlabelled_ == 4 * len(CLASSES)  # the pool; the holdout never
    assert result.holdout_accuracy is None or result.holdout_accuracy >= 0


def test_the_trainer_gathers_no_pool_for_a_head_that_handed_over():
    from app.core.training import takes_unlabelled
    from learner.head import SoftmaxHead
    from learner.semi import SemiSupervisedHead

    semi = SemiSupervisedHead(max_unlabelled=5000)
    assert takes_unlabelled(semi, 10, 10) == 5000
    assert takes_unlabelled(semi, 6000, 10) is None
    assert takes_unlabelled(SoftmaxHead(), 10, 10) is None
