"""Model versions: record each trained one, list them, find the newest."""

from __future__ import annotations

import logging
from typing import Any

import sqlalchemy as sa

from app.store.base import StoreBase, record, records, utcnow
from app.store.records import ModelVersion, NewModelVersion
from app.store.schema import model_versions

logger = logging.getLogger(__name__)


class ModelsMixin(StoreBase):
    """Model versions: record each trained one, list them, find the newest."""

    def next_model_seq(self) -> int:
        """The sequence number the next model version will get."""
        with self.engine.connect() as conn:
            return int(conn.execute(sa.select(sa.func.coalesce(sa.func.max(model_versions.c.seq), 0))).scalar_one()) + 1

    def record_model(self, model: NewModelVersion) -> ModelVersion:
        """Record a trained model version (``created_at`` filled in when None); returns it as recorded."""
        row = {**vars(model), "created_at": model.created_at or utcnow()}
        with self.engine.begin() as conn:
            conn.execute(model_versions.insert().values(**row))
        return ModelVersion(**row)

    def list_models(self) -> list[ModelVersion]:
        """Every model version, oldest first."""
        with self.engine.connect() as conn:
            return records(ModelVersion, conn.execute(sa.select(model_versions).order_by(model_versions.c.seq)))

    def latest_model(self) -> ModelVersion | None:
        """The newest recorded model version, or None."""
        with self.engine.connect() as conn:
            newest = sa.select(model_versions).order_by(model_versions.c.seq.desc()).limit(1)
            return record(ModelVersion, conn.execute(newest).first())

    def newest_model_version(self) -> tuple[int, str] | None:
        """(seq, version) of the newest recorded model version, or None: two columns of one row by the unique seq
        index, cheap enough to ask before every job that scores (:meth:`app.core.serving.ModelHolder.follow`)."""
        with self.engine.connect() as conn:
            newest = sa.select(model_versions.c.seq, model_versions.c.version).order_by(model_versions.c.seq.desc()).limit(1)
            row = conn.execute(newest).first()
        return None if row is None else (int(row.seq), str(row.version))

    def get_model(self, version: str) -> ModelVersion | None:
        """One model version, or None."""
        with self.engine.connect() as conn:
            query = sa.select(model_versions).where(model_versions.c.version == version)
            return record(ModelVersion, conn.execute(query).first())

    def update_model_metrics(self, version: str, metrics: dict[str, Any] | None) -> None:
        """Replace a version's holdout figures (re-measured on a holdout that changed since)."""
        with self.engine.begin() as conn:
            conn.execute(model_versions.update().where(model_versions.c.version == version).values(metrics=metrics))
