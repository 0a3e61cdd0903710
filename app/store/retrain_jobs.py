"""Retrain requests a client can poll (the ``jobs`` table): create, claim, finish, fail the unfinished."""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any, Sequence

import sqlalchemy as sa

from app.store.base import StoreBase, record, records, utcnow
from app.store.records import RetrainJob
from app.store.schema import jobs

logger = logging.getLogger(__name__)


class RetrainJobsMixin(StoreBase):
    """Retrain requests a client can poll (the ``jobs`` table): create, claim, finish, fail the unfinished."""

    def create_job(self, kind: str) -> int:
        """A queued background job a client can poll; returns its id."""
        with self.engine.begin() as conn:
            result = conn.execute(jobs.insert().values(kind=kind, status="queued", created_at=utcnow()))
            return int(result.inserted_primary_key[0])

    def update_job(self, job_id: int, status: str, result: Any = None, error: str | None = None) -> None:
        """Move a job to ``running``, ``done`` or ``failed``."""
        values: dict[str, Any] = {"status": status}
        if status == "running":
            values["started_at"] = utcnow()
        else:
            values.update(finished_at=utcnow(), result=result, error=error)
        with self.engine.begin() as conn:
            conn.execute(jobs.update().where(jobs.c.id == job_id).values(**values))

    def fail_unfinished_jobs(self, error: str, before: datetime | None = None) -> int:
        """Mark jobs a dead process left ``running``, and ``queued`` ones created ``before`` (default: now), as
        failed (their work is gone); returns how many."""
        before = before or utcnow()
        unfinished = sa.or_(jobs.c.status == "running", sa.and_(jobs.c.status == "queued", jobs.c.created_at < before))
        with self.engine.begin() as conn:
            result = conn.execute(jobs.update().where(unfinished).values(status="failed", finished_at=utcnow(), error=error))
        return int(result.rowcount)

    def queued_jobs(self, kinds: Sequence[str]) -> list[RetrainJob]:
        """Jobs of ``kinds`` waiting to run, oldest first."""
        query = sa.select(jobs).where(jobs.c.status == "queued", jobs.c.kind.in_(list(kinds))).order_by(jobs.c.id)
        with self.engine.connect() as conn:
            return records(RetrainJob, conn.execute(query))

    def claim_job(self, job_id: int) -> bool:
        """Move a queued job to ``running``; False when another runner claimed it first (or it is not queued)."""
        with self.engine.begin() as conn:
            result = conn.execute(
                jobs.update().where(jobs.c.id == job_id, jobs.c.status == "queued").values(status="running", started_at=utcnow())
            )
        return result.rowcount == 1

    def get_job(self, job_id: int) -> RetrainJob | None:
        """One job, or None."""
        with self.engine.connect() as conn:
            return record(RetrainJob, conn.execute(sa.select(jobs).where(jobs.c.id == job_id)).first())

