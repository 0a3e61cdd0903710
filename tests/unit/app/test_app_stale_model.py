"""Several workers over one store: every job scores with the store's newest version, whichever process trained it.

Only the process holding the scheduler lease trains, but the lease moves (its holder dies, or loses its lock) to a
worker that loaded its model at start and followed the store only before HTTP requests: its jobs re-scored the
queue with the version before and delivered it to Label Studio (a session's try with ``--workers 2``).
"""

from __future__ import annotations

import pytest

from app.core import checks
from app.core.serving import Embeddings, ModelHolder, ServingModel, load_last_good
from app.core.training import Trainer
from app.services import Services
from app.store import NewLabel, Store
from app.worker.scheduler import deliver_outbox, refresh_queue, retrain_if_due
from learner.cache import EmbeddingCache
from tests.support.images import add_png_item, png
from tests.unit.app.conftest import CLASSES, COLOURS, FakeBackbone, logistic_head


def _pool(services, n_per_class: int = 3) -> list[str]:
    ids = []
    for k, name in enumerate(CLASSES):
        for i in range(n_per_class):
            item_id = f"pool-{name}-{i}"
            add_png_item(services.store, services.data_dir, item_id, png(COLOURS[name], seed=2000 + 10 * k + i), "pool",
                         source=f"pool/{name}/{i}")  # fmt: skip
            ids.append(item_id)
    return ids


@pytest.fixture
def beside(services):
    """Another worker over the same data folder: its own store connection, backbone, model holder and trainer."""
    store = Store.open(services.data_dir)
    embeddings = Embeddings(FakeBackbone(), EmbeddingCache(services.data_dir / "embeddings", FakeBackbone.id))
    models = ModelHolder(load_last_good(store.list_models(), services.data_dir, FakeBackbone.id))
    trainer = Trainer(store, embeddings, models, services.settings.service, services.data_dir, CLASSES, 1_000_000,
                      head_factory=logistic_head)  # fmt: skip
    yield Services(services.settings, store, CLASSES, embeddings, models, trainer, desk=services.desk, project=services.project)
    store.close()


def _newer_version_elsewhere(services, beside) -> None:
    """The scheduler's worker queues and delivers v0001's picks, then trains v0002 on three more labels; the worker
    beside it loaded v0001 at start and has had no request since."""
    assert beside.models.current.version == "v0001"
    pool = _pool(services)
    refresh_queue(services)
    deliver_outbox(services)
    services.store.add_labels([NewLabel(item_id, item_id.split("-")[1], "api") for item_id in pool[::3]])
    assert services.trainer.retrain(reason="three new labels").version == "v0002"


def test_the_worker_taking_the_scheduler_over_scores_and_delivers_with_the_newest_version(services, trained, beside):
    _newer_version_elsewhere(services, beside)
    # The lease moves: the worker beside runs the jobs now.
    refresh_queue(beside)
    deliver_outbox(beside)
    labelled = {row.item_id for row in beside.store.current_labels()}
    sent = {key: task["request"].model_version for key, task in services.desk.tasks.items() if key not in labelled}
    assert sent and set(sent.values()) == {"v0002"}, sent  # every open task's guess is the newest version's
    assert beside.models.current.version == "v0002"


def test_the_worker_taking_the_scheduler_over_counts_new_labels_against_the_newest_version(services, trained, beside):
    _newer_version_elsewhere(services, beside)
    assert retrain_if_due(beside) is None  # the three labels are in v0002: nothing to retrain
    assert [row.version for row in beside.store.list_models()] == ["v0001", "v0002"]
    assert beside.models.current.version == "v0002"  # the next retrain here warm-starts from v0002


def test_the_label_checks_check_the_newest_version(services, trained, beside):
    _newer_version_elsewhere(services, beside)
    result = checks.check_labels(beside.trainer)
    assert result is not None and result.version == "v0002"


def test_a_model_never_moves_back_and_a_broken_newest_head_is_not_read_again(services, trained, beside, monkeypatch):
    older = beside.models.current
    services.trainer.retrain(force=True)  # v0002, recorded elsewhere
    assert beside.models.follow(beside.store, beside.data_dir, FakeBackbone.id).version == "v0002"
    assert not beside.models.swap_if_newer(older)  # a late swap of the older version is refused
    assert beside.models.current.version == "v0002"
    services.trainer.retrain(force=True)  # v0003, whose head is then damaged on disk
    (services.data_dir / "models" / "v0003.pkl").write_bytes(b"not a pickle")
    listed = []
    monkeypatch.setattr(beside.store, "list_models", lambda real=beside.store.list_models: listed.append(1) or real())
    for _ in range(3):
        assert beside.models.follow(beside.store, beside.data_dir, FakeBackbone.id).version == "v0002"
    assert len(listed) == 1  # tried once; the version read alone afterwards


def test_a_refresh_overtaken_by_a_newer_version_leaves_the_queue_to_it(services, trained, monkeypatch):
    """The queue's refresh and a retrain run on different scheduler threads: the older scores must not land last."""
    _pool(services)
    real = ServingModel.proba
    overtaken = []

    def proba(model, X):
        if model.version == "v0001" and not overtaken:  # v0001 is scoring the queue when v0002 comes in
            overtaken.append(services.trainer.retrain(force=True).version)
        return real(model, X)

    monkeypatch.setattr(ServingModel, "proba", proba)
    refresh_queue(services)
    assert overtaken == ["v0002"]
    assert {row.model_version for row in services.store.due_reviews(100)} == {"v0002"}
