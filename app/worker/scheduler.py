"""Background work: ONE APScheduler ``BackgroundScheduler`` per process, started by ``juicer serve``.

Jobs (explicit ids, ``max_instances=1``, ``coalesce=True``; each interval is a ``service.*_interval_s`` setting)::

    connect-label-studio  (only while Label Studio was away at start) find the project, register the webhook
    deliver-outbox     send pending review tasks to Label Studio (:mod:`app.core.delivery`)
    process-webhooks   turn recorded webhook events into labels (:mod:`app.core.intake`)
    pull-labels        ask Label Studio for every completed annotation since the cursor (missed webhooks)
    retrain-check      retrain when ``service.retrain_after_labels`` new labels arrived (:mod:`app.core.retraining`)
    check-labels       check the serving version's labels once: suspects, consensus, second looks (:mod:`app.core.checks`)
    retrain-schedule   retrain on ``service.retrain_interval_s`` when labels changed (if set)
    refresh-queue      re-score the pool and top up the review queue (after new pool items)
    refresh-after-import  the same, once an import finished after the last refresh (:mod:`app.core.imports`)
    prune-predictions  delete the Label Studio prediction versions no open editor can point at any more
    apply-retention    delete served images and predictions older than ``service.keep_served_days``
    run-queued-jobs    the retrains asked for through ``POST /v1/retrain`` or "Start training" in any worker

Each job here is a thin wrapper: it hands :class:`app.services.Services`' parts to the core function that does the
work and wakes the jobs that follow from it; tests call them directly. ``create_app`` never starts a scheduler:
gunicorn workers or test apps would each run one.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta, timezone
from typing import Any

from apscheduler.jobstores.base import JobLookupError
from apscheduler.schedulers.background import BackgroundScheduler

from app.core import checks, delivery, holdout, intake, retention, retraining
from app.core.classes import follow_classes
from app.services import Services

logger = logging.getLogger(__name__)

RETENTION_FIRST_RUN = timedelta(minutes=5)  # not in the first minutes of a start, when the backbone loads


# -- the jobs ---------------------------------------------------------------------------------------
def deliver_outbox(services: Services) -> int:
    """Send due review tasks to Label Studio; returns how many were delivered.

    The project first follows the store's class list (a class added in another process, or while Label Studio
    was away): a prediction of the new class is a choice the project must have. Holdout tasks go first to a
    project juicer did not create, when one is connected through the ML backend (:mod:`app.core.holdout`).
    """
    services.project = follow_classes(
        services.desk, services.project, services.classes, services.settings.label_studio.project_title
    )
    elsewhere = holdout.deliver_holdout_elsewhere(services.store, services.desk, services.project, services.settings.service)
    delivered = delivery.deliver_outbox(services.store, services.desk, services.project, services.settings.service)
    return elsewhere + delivered + delivery.deliver_second_looks(services.store, services.desk, services.project, services.settings.service)


def process_webhook_events(services: Services) -> int:
    """Apply recorded webhook events as labels; returns how many labels changed (and wakes the retrain check)."""
    changed = intake.process_webhook_events(services.store, services.desk, services.classes, services.project)
    if changed:
        services.wake("retrain-check")
    return changed


def pull_labels(services: Services) -> int:
    """Pull completed annotations since the saved cursor (the safety net for missed webhooks)."""
    changed = intake.pull_labels(services.store, services.desk, services.project, services.classes)
    if changed:
        services.wake("retrain-check")
    return changed


def connect_label_studio(services: Services, webhook_url: str | None = None) -> bool:
    """Find or create the Label Studio project and register the webhook; False while Label Studio is away.

    ``juicer serve`` calls it at start and, when it fails, the ``connect-label-studio`` job calls it again until
    it succeeds: predictions are served meanwhile, review tasks wait in the outbox.
    """
    project = intake.connect_label_studio(
        services.desk, services.classes, services.settings.label_studio.project_title,
        webhook_url or services.webhook_url, services.webhook_secret,
    )  # fmt: skip
    if project is None:
        return False
    services.project = project
    return True


def _connect_and_stop(services: Services) -> bool:
    if connect_label_studio(services) and isinstance(services.scheduler, Scheduler):
        services.scheduler.remove("connect-label-studio")
        services.wake("deliver-outbox")
    return services.project is not None


def retrain_if_due(services: Services) -> dict[str, Any] | None:
    """Retrain when at least ``retrain_after_labels`` new labels arrived (or no model serves yet)."""
    result = retraining.retrain_if_due(services.trainer, services.settings.service.retrain_after_labels)
    if result and result.get("version"):
        services.wake("check-labels")
    return result


def check_labels(services: Services) -> dict[str, Any] | None:
    """Check the serving version's labels once (its own job: the out-of-fold fits cost several retrains)."""
    if not services.settings.service.label_checks:
        return None
    result = checks.check_labels(services.trainer)
    if result is not None and result.second_looks:
        services.wake("deliver-outbox")
    return None if result is None else result.to_dict()


def retrain_on_schedule(services: Services) -> dict[str, Any] | None:
    """The scheduled retrain: only when labels changed since the serving model."""
    return retraining.retrain_on_schedule(services.trainer)


def run_retrain_request(services: Services, job_id: int, force: bool = False) -> None:
    """Run the retrain job ``job_id`` a client asked for, after the webhook events recorded before it."""
    retraining.run_retrain_request(
        services.store, services.trainer, job_id, force, catch_up=lambda: process_webhook_events(services)
    )


def run_queued_jobs(services: Services) -> int:
    """Run the retrains queued in the store (by this worker or another), oldest first; returns how many ran."""
    ran = retraining.run_queued_retrains(services.store, services.trainer, catch_up=lambda: process_webhook_events(services))
    if ran:
        services.wake("check-labels")
    return ran


def prune_predictions(services: Services) -> list[str]:
    """Prune superseded prediction versions in Label Studio, off the delivery path (deleting is slow there)."""
    return delivery.prune_predictions(services.desk, services.project)


def apply_retention(services: Services) -> int:
    """Delete served images and predictions older than ``service.keep_served_days``, and processed webhook events
    older than ``service.keep_events_days``; returns items removed."""
    retention.forget_events(services.store, services.settings.service.keep_events_days)
    return retention.apply_retention(services.store, services.data_dir, services.settings.service.keep_served_days)


def refresh_queue(services: Services) -> int:
    """Top up the review queue from the pool under the serving model."""
    return services.trainer.refresh_review_queue()


def refresh_after_import(services: Services) -> int:
    """Refresh the review queue once an import (``juicer import`` in another process, or the bulk route) finished
    after its last refresh: the picks and the holdout then see the whole folder."""
    from app.core.imports import pool_grew_since_refresh

    if not pool_grew_since_refresh(services.store):
        return 0
    return refresh_queue(services)


# -- the scheduler ----------------------------------------------------------------------------------
class _StillRunningFilter(logging.Filter):
    """Drops APScheduler's "skipped: maximum number of running instances reached": ``run-queued-jobs`` ticks
    every second and a retrain it runs takes seconds, so every retrain would print one warning per second."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "maximum number of running instances reached" not in record.getMessage()


_SCHEDULER_LOGGER = logging.getLogger("apscheduler.scheduler")
if not any(isinstance(f, _StillRunningFilter) for f in _SCHEDULER_LOGGER.filters):
    _SCHEDULER_LOGGER.addFilter(_StillRunningFilter())


class Scheduler:
    """The process's scheduler and its jobs; :meth:`start` once, :meth:`shutdown` at exit.

    It sets itself as ``services.scheduler``, through which requests and jobs wake its jobs (:class:`app.services.Waker`).
    """

    def __init__(self, services: Services) -> None:
        self.services = services
        self.scheduler = BackgroundScheduler(
            timezone=timezone.utc,
            # misfire_grace_time None: a job that starts late (a long retrain ahead of it) still runs, never dropped
            job_defaults={"max_instances": 1, "coalesce": True, "misfire_grace_time": None},
        )
        services.scheduler = self

    def _add(self, job_id: str, func: Any, seconds: float, **kwargs: Any) -> None:
        self.scheduler.add_job(
            _logged(job_id, func), "interval", seconds=seconds, id=job_id, name=job_id,
            args=[self.services], replace_existing=True, **kwargs,
        )  # fmt: skip

    def start(self) -> None:
        """Add the recurring jobs and start the scheduler thread."""
        service = self.services.settings.service
        stale = self.services.store.fail_unfinished_jobs(
            "the service restarted before this job finished; ask again", before=datetime.now(timezone.utc)
        )
        if stale:
            logger.warning("%d jobs left queued or running by the last process marked failed", stale)
        now = datetime.now(timezone.utc)
        if self.services.project is None:
            self._add("connect-label-studio", _connect_and_stop, service.connect_interval_s, next_run_time=now)
        self._add("deliver-outbox", deliver_outbox, service.deliver_interval_s, next_run_time=now)
        self._add("process-webhooks", process_webhook_events, service.webhook_interval_s, next_run_time=now)
        self._add("pull-labels", pull_labels, service.pull_interval_s, next_run_time=now)
        self._add("retrain-check", retrain_if_due, service.retrain_check_interval_s)
        self._add("check-labels", check_labels, service.retrain_check_interval_s)
        self._add("run-queued-jobs", run_queued_jobs, service.queued_retrains_interval_s, next_run_time=now)
        self._add("refresh-queue", refresh_queue, service.refresh_queue_interval_s)
        self._add("refresh-after-import", refresh_after_import, service.retrain_check_interval_s)
        self._add("prune-predictions", prune_predictions, service.prune_interval_s)
        self._add("apply-retention", apply_retention, service.retention_interval_s, next_run_time=now + RETENTION_FIRST_RUN)
        if service.retrain_interval_s > 0:
            self._add("retrain-schedule", retrain_on_schedule, service.retrain_interval_s)
        self.scheduler.start()
        logger.info("scheduler started with jobs: %s", ", ".join(job.id for job in self.scheduler.get_jobs()))

    def shutdown(self, wait: bool = True) -> None:
        """Stop the scheduler (waiting for running jobs with ``wait``)."""
        if self.scheduler.running:
            self.scheduler.shutdown(wait=wait)

    @property
    def running(self) -> bool:
        """Whether the scheduler thread runs."""
        return bool(self.scheduler.running)

    def remove(self, job_id: str) -> None:
        """Drop a recurring job (a no-op when it is not there)."""
        try:
            self.scheduler.remove_job(job_id)
        except JobLookupError:
            pass

    def wake(self, job_id: str) -> None:
        """Run a recurring job as soon as possible (coalesced with a run already due)."""
        if not self.scheduler.running:
            return
        try:
            self.scheduler.modify_job(job_id, next_run_time=datetime.now(timezone.utc))
        except JobLookupError:
            logger.debug("no job %s to wake", job_id)

    def submit_retrain(self, force: bool = False) -> int:
        """Queue a retrain now (``force``: even with no new labels) and wake its job; the store's job id to poll."""
        job_id = retraining.queue_retrain(self.services.store, force=force)
        self.wake("run-queued-jobs")
        return job_id


def _logged(job_id: str, func: Any) -> Any:
    """Wrap a job so that a failure is logged with its id (the scheduler keeps running it on schedule)."""

    def run(*args: Any) -> Any:
        try:
            return func(*args)
        except Exception:
            logger.exception("job %s failed; it will run again on schedule", job_id)
            return None

    run.__name__ = func.__name__
    return run
