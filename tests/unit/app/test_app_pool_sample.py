"""``learner.pool_sample``: the service's settings reach the strategies and the semi-supervised head."""

from __future__ import annotations

import base64

import numpy as np
import pytest

from app.services import build_services
from app.worker.scheduler import refresh_queue
from config import load_settings
from learner.semi import SemiSupervisedHead
from tests.support.images import png
from tests.unit.app.conftest import CLASSES, COLOURS, FakeBackbone, FakeDesk

PER_CLASS = 4  # a pool of 12 items


def wired(tmp_path, strategy: str, **pool_sample: int):
    """The real wiring (``build_services``) from settings with these pool samples, a fake backbone and desk."""
    settings = load_settings(
        environ={}, data_dir=tmp_path,
        service={"classes": list(CLASSES), "review_batch_size": 2, "max_images_per_request": 4,
                 "api_token": "s3cret", "holdout": {"reserve": False}, "query_strategy": strategy},
        learner={"max_image_pixels": 1_000_000, "pool_sample": pool_sample},
        label_studio={"webhook_secret": "hook-secret-123", "token": "ls-token-for-tests"},
    )
    return build_services(settings, backbone=FakeBackbone(), desk=FakeDesk())


@pytest.fixture
def client_of():
    opened = []

    def client(services):
        from app import create_app

        opened.append(services)
        test_client = create_app(services=services).test_client()
        test_client.environ_base["HTTP_AUTHORIZATION"] = "Bearer s3cret"
        return test_client

    yield client
    for services in opened:
        services.store.close()


def post_pool(client) -> None:
    images = [base64.b64encode(png(COLOURS[name], seed=700 + 10 * k + i)).decode()
              for k, name in enumerate(CLASSES) for i in range(PER_CLASS)]
    for start in range(0, len(images), 4):
        assert client.post("/v1/items", json={"images": images[start:start + 4]}).status_code == 201


def post_labels(client, per_class: int = 2) -> None:
    entries = [{"image": base64.b64encode(png(COLOURS[name], seed=10 * k + i)).decode(), "label": name}
               for k, name in enumerate(CLASSES) for i in range(per_class)]
    for start in range(0, len(entries), 4):
        assert client.post("/v1/labels", json={"labels": entries[start:start + 4]}).status_code == 201


def queued_ids(services) -> set[str]:
    return {row.item_id for row in services.store.due_reviews(100)}


def test_the_cluster_sample_sets_the_rows_typical_picks_choose_from(tmp_path, client_of):
    services = wired(tmp_path, "typical", cluster=2)  # as many rows as the batch: the sample is the batch
    post_pool(client_of(services))
    pool = services.store.unlabelled_columns("pool").ids
    assert refresh_queue(services) == 2
    # No model yet: the trainer's seed is 0, and the sample of 2 of the 12 rows is drawn before anything else.
    sample = np.sort(np.random.RandomState(0).choice(len(pool), size=2, replace=False))
    assert queued_ids(services) == {pool[i] for i in sample}


def test_the_margin_sample_sets_the_rows_diverse_margin_scores(tmp_path, client_of):
    services = wired(tmp_path, "diverse_margin", margin=3)
    client = client_of(services)
    post_labels(client)
    post_pool(client)
    result = services.trainer.retrain(reason="test", refresh_queue=False)
    assert result.version == "v0001"
    pool = services.store.unlabelled_columns("pool").ids
    assert refresh_queue(services) == 2
    # The model's seed is its label count; the 3 sampled rows are the only ones scored, so the picks are among them.
    sample = np.sort(np.random.RandomState(services.models.current.n_labels).choice(len(pool), size=3, replace=False))
    assert queued_ids(services) <= {pool[i] for i in sample}


@pytest.mark.parametrize("semi_head, expected", [(5, 5), (None, PER_CLASS * len(CLASSES))])
def test_the_semi_head_sample_sets_the_unlabelled_rows_a_retrain_learns_from(tmp_path, client_of, semi_head, expected):
    services = wired(tmp_path, "auto", **({} if semi_head is None else {"semi_head": semi_head}))
    client = client_of(services)
    post_labels(client)
    post_pool(client)
    services.trainer.retrain(reason="test", refresh_queue=False)
    head = services.models.current.head
    assert isinstance(head, SemiSupervisedHead)
    assert head.n_unlabelled_ == expected  # the default (5,000) holds the whole pool of 12
    services.trainer.retrain(reason="test", force=True, refresh_queue=False)  # warm-started: keeps the setting
    assert services.models.current.head.max_unlabelled == (semi_head or 5000)
