"""What the app and the jobs are handed: the store, the one backbone, the model, the trainer, the desk.

:func:`build_services` wires the real parts from settings (loading the backbone takes seconds);
tests build :class:`Services` themselves with fakes at these seams. The process's scheduler
(:class:`app.worker.scheduler.Scheduler`, a layer above) is reached only through the :class:`Waker` protocol.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from app.core.serving import Embeddings, ModelHolder, load_last_good
from app.store import Store
from learner.cache import Embedder
from app.core.training import Trainer
from config.settings import Settings

if TYPE_CHECKING:  # annotations only: the desk pulls in the SDK
    import httpx

    from annotation.desk import LabelStudioDesk
    from annotation.models import Project

logger = logging.getLogger(__name__)


class SetupError(Exception):
    """The service cannot be wired: no class list, a backbone that does not load, an unreadable store."""


class Waker(Protocol):
    """The process's scheduler as requests and jobs see it: whether it runs, and "run this job now"."""

    @property
    def running(self) -> bool:
        """Whether the scheduler thread runs."""
        ...

    def wake(self, job_id: str) -> None:
        """Run the recurring job ``job_id`` as soon as possible."""
        ...


@dataclass
class Services:
    """Everything a request or a job needs; one instance per process."""

    settings: Settings
    store: Store
    #: The class list resolved at start (:func:`resolve_classes`); :attr:`classes` is the one to read.
    start_classes: tuple[str, ...]
    embeddings: Embeddings
    models: ModelHolder
    trainer: Trainer
    desk: LabelStudioDesk | None = None
    project: Project | None = None
    #: This process's scheduler, set by :class:`app.worker.scheduler.Scheduler` (``juicer serve``); None in the
    #: other workers and in test apps.
    scheduler: Waker | None = None
    #: Some process holds the scheduler lease (or takes it within seconds): a retrain queued here is run there.
    #: Set for every gunicorn worker by :mod:`app.http.server`.
    scheduler_elsewhere: bool = False
    #: The URL Label Studio posts annotation events to (registered by :func:`app.worker.scheduler.connect_label_studio`).
    webhook_url: str | None = None
    #: The process's Prometheus metrics (:class:`app.http.metrics.Metrics`, made by ``create_app`` unless given).
    metrics: Any = None
    #: Label Studio project id -> the access token its ``/setup`` call brought (to read the project's images).
    ml_backend_tokens: dict[str, str] = field(default_factory=dict)
    #: The gallery of the current model versions, with the key it was built for (:mod:`app.http.gallery`).
    gallery: tuple[Any, Any] | None = None
    #: Replaces the network under the ML backend's image fetcher (:class:`annotation.task_images.TaskImages`):
    #: tests hand in an ``httpx.MockTransport``.
    task_images_transport: httpx.BaseTransport | None = None

    @property
    def classes(self) -> tuple[str, ...]:
        """The class list now: the store's, read per use, so every worker sees a class added at run time."""
        return self.store.stored_classes() or tuple(self.start_classes)

    @property
    def data_dir(self) -> Path:
        """The data folder (images, models, embeddings, state)."""
        return Path(self.settings.data_dir)

    @property
    def webhook_secret(self) -> str:
        """The secret Label Studio must send with webhooks (``""``, matching nothing, when none was resolved)."""
        return self.settings.label_studio.webhook_secret or ""

    @property
    def scheduler_reachable(self) -> bool:
        """Whether a retrain queued in the store will be run: by this process's scheduler, or by the lease holder's."""
        return (self.scheduler is not None and self.scheduler.running) or self.scheduler_elsewhere

    def wake(self, job_id: str) -> None:
        """Ask the scheduler to run a job now (no-op without a scheduler in this process)."""
        if self.scheduler is not None:
            self.scheduler.wake(job_id)


def resolve_classes(settings: Settings, store: Store) -> tuple[str, ...]:
    """The class list at start, recorded in the store: ``service.classes``, else the list the store holds.

    Once a class was added at run time (``POST /v1/classes``, ``juicer classes add``) the store's list is the
    truth: a configured list that lacks such a class starts with it kept after the configured ones (a warning
    says to add it to ``service.classes``). A configured list that drops a class it once had stops the start.
    """
    configured = list(settings.service.classes or ())
    stored = list(store.stored_classes())
    if configured:
        resolved = configured
        if stored and stored != configured:
            added_at_run_time = set(store.added_classes())
            removed = [c for c in stored if c not in configured]
            dropped = [c for c in removed if c not in added_at_run_time]
            if dropped:
                raise SetupError(
                    f"service.classes drops {dropped} that the store at {settings.data_dir} already uses; "
                    "keep them in the list (new ones may be appended)"
                )
            if removed:
                logger.warning(
                    "service.classes lacks %s, added at run time (POST /v1/classes or `juicer classes add`): kept "
                    "after the configured classes; add them to service.classes to say so in the config", removed,
                )  # fmt: skip
            appended = [c for c in configured if c not in stored]
            if appended:
                logger.info("new classes appended: %s", appended)
            resolved = configured + removed
        if resolved != stored:
            store.set_classes(resolved)
        return tuple(resolved)
    if stored:
        return tuple(stored)
    raise SetupError(
        "no classes configured: set service.classes in the config file (or JUICER_SERVICE__CLASSES), "
        "or run `juicer serve` with the demo to seed Fashion-MNIST"
    )


def build_services(
    settings: Settings, *, store: Store | None = None, backbone: Embedder | None = None, desk: LabelStudioDesk | None = None
) -> Services:
    """Wire the real parts: store, backbone + embedding cache, the last good model, trainer, Label Studio desk."""
    from app.core.secrets import resolve_secrets
    from learner.cache import EmbeddingCache, embedding_cache_dir

    settings = resolve_secrets(settings)  # generated secrets on first start; idempotent
    data_dir = Path(settings.data_dir)
    store = store or Store.from_settings(settings)
    classes = resolve_classes(settings, store)
    if backbone is None:
        from learner.backbones import load_backbone, resolve_backbone

        spec = resolve_backbone(settings.learner.backbone, data_dir, settings.learner.input_size)
        backbone = load_backbone(spec, settings.learner.batch_size, settings.learner.mixed_precision)
    cache = EmbeddingCache(embedding_cache_dir(data_dir), backbone.id)
    embeddings = Embeddings(backbone, cache, settings.service.embedding_memo_size)
    models = ModelHolder(load_last_good(store.list_models(), data_dir, backbone.id))
    if models.current is not None:
        logger.info("serving the last good model %s", models.current.version)
    trainer = Trainer(store, embeddings, models, settings.service, data_dir, classes, settings.learner.max_image_pixels,
                      pool_sample=settings.learner.pool_sample)
    if desk is None:
        from annotation.desk import desk_from_settings

        desk = desk_from_settings(settings)
    return Services(settings, store, classes, embeddings, models, trainer, desk=desk)
