"""When to retrain: after ``retrain_after_labels`` new labels, on a schedule, and when a client asks.

A client's request (``POST /v1/retrain``, Label Studio's "Start training") is a row in the store's job table,
queued by :func:`queue_retrain` in whichever worker took the request and run by :func:`run_queued_retrains` in
the one process that runs the scheduler, so any worker can take the request.
"""

from __future__ import annotations

import logging
from typing import Any, Callable

from app.core.training import Trainer
from app.store import Store

logger = logging.getLogger(__name__)

RETRAIN_KINDS = {"retrain": False, "retrain-force": True}  # job kind -> force


def retrain_if_due(trainer: Trainer, retrain_after_labels: int) -> dict[str, Any] | None:
    """Retrain when at least ``retrain_after_labels`` new labels arrived (or no model serves yet); otherwise
    re-measure the stored versions if the holdout changed (holdout labels never trigger a retrain)."""
    new = trainer.new_labels()
    if (trainer.models.current is not None and new < retrain_after_labels) or new == 0:
        trainer.remeasure()
        return None
    return trainer.retrain(reason=f"{new} new labels").to_dict()


def retrain_on_schedule(trainer: Trainer) -> dict[str, Any] | None:
    """The scheduled retrain: only when labels changed since the serving model."""
    if trainer.new_labels() == 0:
        return None
    return trainer.retrain(reason="schedule").to_dict()


def queue_retrain(store: Store, force: bool = False) -> int:
    """Queue a retrain in the store for the scheduler (in this process or another); the job id to poll."""
    return store.create_job("retrain-force" if force else "retrain")


def run_retrain_request(
    store: Store, trainer: Trainer, job_id: int, force: bool = False, catch_up: Callable[[], Any] | None = None
) -> None:
    """Run the retrain a client asked for, recording its progress in the store's job ``job_id``.

    ``catch_up`` runs first (the label intake: labels that came by webhook just before the request count).
    Without ``force`` the retrain is skipped (the job's result says why) when no label changed since the
    serving model: a second version on the same labels would only add a duplicate point to the report. A job
    another runner already claimed is left alone.
    """
    if not store.claim_job(job_id):
        return
    try:
        if catch_up is not None:
            catch_up()
        result = trainer.retrain(reason=f"request {job_id}", force=force)
    except Exception as exc:  # the job row must say it failed; the serving model is untouched
        logger.exception("retrain job %s failed", job_id)
        store.update_job(job_id, "failed", error=f"{type(exc).__name__}: {exc}")
        return
    store.update_job(job_id, "done", result=result.to_dict())


def run_queued_retrains(store: Store, trainer: Trainer, catch_up: Callable[[], Any] | None = None) -> int:
    """Run the retrains queued in the store (by this worker or another), oldest first; returns how many ran."""
    ran = 0
    for job in store.queued_jobs(list(RETRAIN_KINDS)):
        run_retrain_request(store, trainer, job.id, force=RETRAIN_KINDS[job.kind], catch_up=catch_up)
        ran += 1
    return ran
