"""The first labels: typical picks queued before any model, and the semi-supervised head as the default."""

from __future__ import annotations

import base64

import numpy as np
import pytest

from app.worker.scheduler import deliver_outbox, refresh_queue
from app.core.training import COLD_START_VERSION, default_head_factory
from app.store import NewItem, NewLabel
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


def _numbered_items(services) -> list[int]:
    """Pool, served, holdout and labelled items whose cached vector is (n, 0, ...) for item ``n``; the numbers of
    the unlabelled population the pool sample draws from: the pool's, then the served ones (quarantined included)."""
    store = services.store
    split = {n: "pool" if n < 40 else "served" if n < 50 else "holdout" for n in range(55)}
    store.add_items([NewItem(f"n-{n:03d}", f"{n:064x}", "test", split[n], f"images/{n}.png") for n in range(55)]
                    + [NewItem("n-no-image", "e" * 64, "test", "pool", None)])
    store.add_labels([NewLabel(f"n-{n:03d}", CLASSES[0], "api") for n in (1, 2, 3, 42)])
    store.quarantine("n-006", "image file missing")
    store.quarantine("n-044", "image unreadable")
    vectors = np.zeros((56, services.embeddings.backbone.dim), np.float32)
    vectors[:55, 0] = np.arange(55)
    services.embeddings.cache.put_many([f"{n:064x}" for n in range(55)] + ["e" * 64], vectors)
    return [n for n in range(40) if n not in (1, 2, 3, 6)] + [n for n in range(40, 50) if n != 42]


def test_the_retrain_pool_sample_is_a_seeded_uniform_draw_read_without_the_whole_pool(services, monkeypatch):
    population = _numbered_items(services)
    trainer = services.trainer
    everything = trainer.unlabelled_sample(100, seed=7)  # at or under the limit: every one, in order
    assert everything[:, 0].astype(int).tolist() == population

    def whole_pool(*args, **kwargs):
        raise AssertionError("a sample above the limit reads only the sampled rows")

    monkeypatch.setattr(services.store, "unlabelled_columns", whole_pool)
    for seed in (7, 8):
        sample = trainer.unlabelled_sample(12, seed=seed)[:, 0].astype(int).tolist()
        # the same draw as over every id and hash read into lists: row numbers of the population, seeded
        drawn = np.sort(np.random.default_rng(seed).choice(len(population), size=12, replace=False))
        assert sample == [population[i] for i in drawn]
        assert trainer.unlabelled_sample(12, seed=seed)[:, 0].astype(int).tolist() == sample
    assert trainer.unlabelled_sample(12, seed=7).tolist() != trainer.unlabelled_sample(12, seed=8).tolist()


@pytest.mark.parametrize("limit", [1, 10, 30])
def test_the_pool_sample_covers_the_population_uniformly(services, limit):
    population = _numbered_items(services)
    counts = {n: 0 for n in population}
    draws = 400
    for seed in range(draws):
        sample = services.trainer.unlabelled_sample(limit, seed=seed)[:, 0].astype(int).tolist()
        assert len(sample) == len(set(sample)) == limit
        for n in sample:
            counts[n] += 1
    expected = draws * limit / len(population)
    assert set(counts) == set(population)  # no labelled, holdout, imageless or quarantined pool item
    assert all(abs(count - expected) < 5 * expected ** 0.5 for count in counts.values()), counts
