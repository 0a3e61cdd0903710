"""What the app and the jobs are handed: the store, the one backbone, the model, the trainer, the desk.

:func:`build_services` wires the real parts from settings (loading the backbone takes seconds);
tests build :class:`Services` themselves with fakes at these seams.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from app.core.serving import Embeddings, ModelHolder, load_last_good
from app.store import Store
from learner.cache import Embedder
from app.core.training import Trainer
from config.settings import Settings

if TYPE_CHECKING:  # annotations only: the jobs import this module, and the desk pulls in the SDK
    from annotation.desk import LabelStudioDesk
    from annotation.models import Project
    from app.worker.scheduler import Jobs

logger = logging.getLogger(__name__)


class SetupError(Exception):
    """The service cannot be wired: no class list, a backbone that does not load, an unreadable store."""


@dataclass
class Services:
    """Everything a request or a job needs; one instance per process."""

    settings: Settings
    store: Store
    classes: tuple[str, ...]
    embeddings: Embeddings
    models: ModelHolder
    trainer: Trainer
    desk: LabelStudioDesk | None = None
    project: Project | None = None
    jobs: Jobs | None = None  # started by `juicer serve`
    extras: dict[str, Any] = field(default_factory=dict)

    @property
    def data_dir(self) -> Path:
        """The data folder (images, models, embeddings, state)."""
        return Path(self.settings.data_dir)

    @property
    def webhook_secret(self) -> str:
        """The secret Label Studio must send with webhooks (``""``, matching nothing, when none was resolved)."""
        return self.settings.label_studio.webhook_secret or ""

    def wake(self, job_id: str) -> None:
        """Ask the scheduler to run a job now (no-op without a running scheduler)."""
        if self.jobs is not None:
            self.jobs.wake(job_id)


def resolve_classes(settings: Settings, store: Store) -> tuple[str, ...]:
    """The class list: from settings, else the one the store was seeded with; recorded in the store."""
    configured = settings.service.classes
    stored = store.get_meta("classes")
    if configured:
        if stored and list(stored) != list(configured):
            added = [c for c in configured if c not in stored]
            removed = [c for c in stored if c not in configured]
            if removed:
                raise SetupError(
                    f"service.classes drops {removed} that the store at {settings.data_dir} already uses; "
                    "keep them in the list (new ones may be appended)"
                )
            logger.info("new classes appended: %s", added)
        store.set_meta("classes", list(configured))
        return tuple(configured)
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
    trainer = Trainer(store, embeddings, models, settings.service, data_dir, classes, settings.learner.max_image_pixels)
    if desk is None:
        from annotation.desk import desk_from_settings

        desk = desk_from_settings(settings)
    return Services(settings, store, classes, embeddings, models, trainer, desk=desk)
