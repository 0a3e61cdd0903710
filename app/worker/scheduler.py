"""Background work: ONE APScheduler ``BackgroundScheduler`` per process, started by ``juicer serve``.

Jobs (explicit ids, ``max_instances=1``, ``coalesce=True``)::

    connect-label-studio  (only while Label Studio was away at start) find the project, register the webhook
    deliver-outbox     send pending review tasks to Label Studio; failures back off (doubling, capped) and retry
                       up to ``delivery_max_attempts``, then the task is ``failed`` (POST /v1/reviews/retry)
    process-webhooks   turn recorded webhook events into labels (the webhook view only records them)
    pull-labels        ask Label Studio for every completed annotation since the cursor (missed webhooks)
    retrain-check      retrain when ``service.retrain_after_labels`` new labels arrived
    retrain-schedule   retrain on ``service.retrain_interval_s`` when labels changed (if set)
    refresh-queue      re-score the pool and top up the review queue (after new pool items)
    prune-predictions  delete the Label Studio prediction versions no open editor can point at any more
    apply-retention    delete served images and predictions older than ``service.keep_served_days``
    run-queued-jobs    the retrains asked for through ``POST /v1/retrain`` in any worker (queued rows in the store)

Each job function takes :class:`app.services.Services` and is a plain function, so tests call them directly.
``create_app`` never starts a scheduler: gunicorn workers or test apps would each run one.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta, timezone
from pathlib import PurePosixPath
from typing import Any

from apscheduler.jobstores.base import JobLookupError
from apscheduler.schedulers.background import BackgroundScheduler

from annotation.errors import AnnotationError
from app.services import Services
from app.store import DueReview, LabelChange, utcnow

logger = logging.getLogger(__name__)

PULL_CURSOR = "label-studio-pull"


# -- the jobs ---------------------------------------------------------------------------------------
def retry_delay(service: Any, attempts: int, retryable: bool) -> float:
    """Seconds before the next delivery attempt: doubling from ``retry_backoff_s``, capped (exponent too)."""
    if not retryable:
        return service.retry_backoff_max_s  # a refusal needs a person; keep it, retry rarely
    return min(service.retry_backoff_s * 2 ** min(attempts, 32), service.retry_backoff_max_s)


def _delivery_failed(services: Services, rows: list[DueReview], exc: Exception) -> None:
    """Count one failed attempt per row; a row at ``delivery_max_attempts`` becomes ``failed``."""
    settings = services.settings.service
    retryable = bool(getattr(exc, "retryable", False))
    for row in rows:
        attempts = int(row.attempts) + 1
        retry_at = None
        if attempts < settings.delivery_max_attempts:
            retry_at = utcnow() + timedelta(seconds=retry_delay(settings, attempts - 1, retryable))
        services.store.mark_delivery_failed([row.item_id], str(exc), retry_at)
        if retry_at is None:
            logger.error("review task %s failed %d times, marked failed: %s", row.item_id, attempts, exc)


def deliver_outbox(services: Services) -> int:
    """Send due review tasks to Label Studio in batches; returns how many were delivered.

    Label Studio down (a retryable error) backs off the whole batch; a refusal is narrowed down by sending
    the batch's items one at a time, so only the refused item backs off.
    """
    from annotation.models import ReviewRequest

    if services.desk is None or services.project is None:
        return 0
    settings = services.settings.service
    delivered = 0
    while True:
        due = services.store.due_reviews(settings.deliver_batch_size)
        if not due:
            return delivered
        requests = [
            ReviewRequest(
                item_id=row.item_id,
                image=str(PurePosixPath(row.image_path).relative_to("images")),
                label=row.label or None,  # "" before the first model: no prediction to show
                score=float(row.score),
                model_version=row.model_version,
            )
            for row in due
        ]
        try:
            tasks = services.desk.send_for_review(services.project, requests)
        except AnnotationError as exc:
            if exc.retryable or len(due) == 1:
                _delivery_failed(services, due, exc)
                logger.warning("delivering %d review tasks failed (%s); retrying later", len(due), exc)
                return delivered
            tasks = []
            for request, row in zip(requests, due):
                try:
                    tasks.extend(services.desk.send_for_review(services.project, [request]))
                except AnnotationError as one:
                    _delivery_failed(services, [row], one)
                    logger.warning("review task %s refused: %s", row.item_id, one)
            delivered += services.store.mark_delivered(
                {task.item_id: task.task_id for task in tasks}, {row.item_id: row.model_version for row in due}
            )
            return delivered
        marked = services.store.mark_delivered(
            {task.item_id: task.task_id for task in tasks}, {row.item_id: row.model_version for row in due}
        )
        delivered += marked
        logger.info("delivered %d review tasks to Label Studio", len(tasks))
        if len(due) < settings.deliver_batch_size or marked == 0:
            return delivered


def _changes(services: Services, events: list[Any]) -> list[LabelChange]:
    changes = []
    for event in events:
        if event.action == "set" and event.label not in services.classes:
            logger.warning("label %r for item %s is not one of the classes: ignored", event.label, event.item_id)
            continue
        changes.append(
            LabelChange(
                item_id=event.item_id,
                annotation_id=str(event.annotation_id),
                label=event.label,
                annotator=event.annotator,
                at=event.at,
                action=event.action,
            )
        )
    return changes


def process_webhook_events(services: Services) -> int:
    """Apply recorded webhook events as labels, one at a time; returns how many labels changed.

    An event that cannot be used (a malformed body, or anything that raises while it is applied) is marked with
    its error and skipped: the events behind it are applied, none waits behind a poison one.
    """
    from annotation.webhooks import parse_webhook

    from app.http.ml_backend import verify_event

    changed = 0
    for event in services.store.pending_events():
        try:
            payload = verify_event(services, event.payload)  # events the ML backend took without credentials
        except AnnotationError as exc:
            if exc.retryable:
                logger.warning("webhook event %s not verified yet (%s); trying again later", event.id, exc)
                break
            payload, error = None, f"{type(exc).__name__}: {exc}"
        except Exception as exc:  # noqa: BLE001 - one poison event must not block the rest; it is kept, marked
            payload, error = None, f"{type(exc).__name__}: {exc}"
        else:
            error = "not confirmed by Label Studio"
        if payload is None:
            logger.warning("webhook event %s unusable, marked failed: %s", event.id, error)
            services.store.mark_event(event.id, error=error)
            continue
        try:
            changed += services.store.apply_label_events(_changes(services, parse_webhook(payload)))
        except Exception as exc:  # noqa: BLE001 - one poison event must not block the rest; it is kept, marked
            logger.warning("webhook event %s unusable, marked failed: %s: %s", event.id, type(exc).__name__, exc)
            services.store.mark_event(event.id, error=f"{type(exc).__name__}: {exc}")
            continue
        services.store.mark_event(event.id)
    if changed:
        services.wake("retrain-check")
    return changed


def pull_labels(services: Services) -> int:
    """Pull completed annotations since the saved cursor (the safety net for missed webhooks)."""
    from annotation.models import PullCursor

    if services.desk is None or services.project is None:
        return 0
    saved = services.store.get_cursor(PULL_CURSOR)
    cursor = None
    if saved:
        try:
            cursor = PullCursor.from_json(saved)
        except ValueError:
            logger.warning("stored pull cursor unreadable; pulling from the beginning")
        if cursor is not None and cursor.project_id != services.project.id:
            cursor = None
    events, cursor = services.desk.pull_labels(services.project, cursor)
    changed = services.store.apply_label_events(_changes(services, events))
    services.store.set_cursor(PULL_CURSOR, cursor.to_json())
    if changed:
        logger.info("pull found %d label changes the webhooks had not brought", changed)
        services.wake("retrain-check")
    return changed


def connect_label_studio(services: Services, webhook_url: str | None = None) -> bool:
    """Find or create the Label Studio project and register the webhook; False while Label Studio is away.

    ``juicer serve`` calls it at start and, when it fails, the ``connect-label-studio`` job calls it again until
    it succeeds: predictions are served meanwhile, review tasks wait in the outbox.
    """
    if services.desk is None:
        return False
    webhook_url = webhook_url or services.extras.get("webhook_url")
    try:
        project = services.desk.ensure_project(list(services.classes), services.settings.label_studio.project_title)
        if webhook_url:
            services.desk.register_webhook(project, webhook_url, services.webhook_secret)
    except AnnotationError as exc:
        logger.warning("Label Studio is not reachable (%s): serving predictions, review tasks wait in the outbox", exc)
        return False
    services.project = project
    logger.info("connected to Label Studio project %r (id %s)", project.title, project.id)
    return True


def _connect_and_stop(services: Services) -> bool:
    if connect_label_studio(services) and services.jobs is not None:
        services.jobs.remove("connect-label-studio")
        services.wake("deliver-outbox")
    return services.project is not None


def retrain_if_due(services: Services) -> dict[str, Any] | None:
    """Retrain when at least ``retrain_after_labels`` new labels arrived (or no model serves yet)."""
    new = services.trainer.new_labels()
    if services.models.current is not None and new < services.settings.service.retrain_after_labels:
        return None
    if new == 0:
        return None
    return services.trainer.retrain(reason=f"{new} new labels").to_dict()


def retrain_on_schedule(services: Services) -> dict[str, Any] | None:
    """The scheduled retrain: only when labels changed since the serving model."""
    if services.trainer.new_labels() == 0:
        return None
    return services.trainer.retrain(reason="schedule").to_dict()


RETRAIN_KINDS = {"retrain": False, "retrain-force": True}  # job kind -> force


def run_retrain_request(services: Services, job_id: int, force: bool = False) -> None:
    """Run the retrain a client asked for, recording its progress in the store's job ``job_id``.

    Without ``force`` it is skipped (the job's result says why) when no label changed since the serving
    model: a second version on the same labels would only add a duplicate point to the report. A job another
    runner already claimed is left alone.
    """
    if not services.store.claim_job(job_id):
        return
    try:
        process_webhook_events(services)  # labels that came by webhook just before the request count
        result = services.trainer.retrain(reason=f"request {job_id}", force=force)
    except Exception as exc:  # the job row must say it failed; the serving model is untouched
        logger.exception("retrain job %s failed", job_id)
        services.store.update_job(job_id, "failed", error=f"{type(exc).__name__}: {exc}")
        return
    services.store.update_job(job_id, "done", result=result.to_dict())


def prune_predictions(services: Services) -> list[str]:
    """Prune superseded prediction versions in Label Studio, off the delivery path (deleting is slow there)."""
    if services.desk is None or services.project is None:
        return []
    return services.desk.prune_predictions(services.project)


def run_queued_jobs(services: Services) -> int:
    """Run the retrains queued in the store (by this worker or another), oldest first; returns how many ran."""
    ran = 0
    for job in services.store.queued_jobs(list(RETRAIN_KINDS)):
        run_retrain_request(services, job.id, force=RETRAIN_KINDS[job.kind])
        ran += 1
    return ran


def queue_retrain(services: Services, force: bool = False) -> int:
    """Queue a retrain in the store for the scheduler (in this process or another) and wake it; the job id."""
    job_id = services.store.create_job("retrain-force" if force else "retrain")
    services.wake("run-queued-jobs")
    return job_id


def apply_retention(services: Services) -> int:
    """Delete served images and predictions older than ``service.keep_served_days``; returns items removed.

    Kept whatever the age: items with a label (they train), items whose review is open, every item's newest
    prediction. Rows go first, files after, so a crash between the two leaves an unreferenced file, never a
    row naming a missing one.
    """
    days = services.settings.service.keep_served_days
    if days is None:
        return 0
    paths = services.store.forget_served(utcnow() - timedelta(days=days))
    for relative in paths:
        (services.data_dir / relative).unlink(missing_ok=True)
    if paths:
        logger.info("retention: %d served images older than %g days removed", len(paths), days)
    return len(paths)


def refresh_queue(services: Services) -> int:
    """Top up the review queue from the pool under the serving model."""
    return services.trainer.refresh_review_queue()


# -- the scheduler ----------------------------------------------------------------------------------
class _StillRunningFilter(logging.Filter):
    """Drops APScheduler's "skipped: maximum number of running instances reached": ``run-queued-jobs`` ticks
    every second and a retrain it runs takes seconds, so every retrain would print one warning per second."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "maximum number of running instances reached" not in record.getMessage()


_SCHEDULER_LOGGER = logging.getLogger("apscheduler.scheduler")
if not any(isinstance(f, _StillRunningFilter) for f in _SCHEDULER_LOGGER.filters):
    _SCHEDULER_LOGGER.addFilter(_StillRunningFilter())


class Jobs:
    """The process's scheduler and its jobs; :meth:`start` once, :meth:`shutdown` at exit."""

    def __init__(self, services: Services) -> None:
        self.services = services
        self.scheduler = BackgroundScheduler(
            timezone=timezone.utc,
            # misfire_grace_time None: a job that starts late (a long retrain ahead of it) still runs, never dropped
            job_defaults={"max_instances": 1, "coalesce": True, "misfire_grace_time": None},
        )
        services.jobs = self

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
            self._add("connect-label-studio", _connect_and_stop, max(1.0, service.deliver_interval_s), next_run_time=now)
        self._add("deliver-outbox", deliver_outbox, service.deliver_interval_s, next_run_time=now)
        self._add("process-webhooks", process_webhook_events, max(1.0, service.deliver_interval_s), next_run_time=now)
        self._add("pull-labels", pull_labels, service.pull_interval_s, next_run_time=now)
        self._add("retrain-check", retrain_if_due, 30.0)
        self._add("run-queued-jobs", run_queued_jobs, 1.0, next_run_time=now)
        self._add("refresh-queue", refresh_queue, 3600.0)
        self._add("prune-predictions", prune_predictions, max(600.0, service.pull_interval_s))
        self._add("apply-retention", apply_retention, 6 * 3600.0, next_run_time=now + timedelta(minutes=5))
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
        """Queue a retrain now (``force``: even with no new labels); returns the store's job id to poll."""
        return queue_retrain(self.services, force=force)


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
