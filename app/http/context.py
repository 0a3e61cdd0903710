"""What both HTTP doors (``/v1`` in :mod:`app.http.api`, Label Studio's in :mod:`app.http.ml_backend`) share:
the request's services and the one rule for queueing a retrain.

The body reader is :func:`app.http.jsonbody.json_object`, the token check :func:`app.http.auth.token_refusal`.
"""

from __future__ import annotations

from flask import current_app

from app.core.retraining import queue_retrain as queue_retrain_job
from app.http.problems import Problem
from app.services import Services


def services() -> Services:
    """The services of the app handling this request."""
    return current_app.extensions["juicer"]


def queue_retrain(svc: Services, force: bool = False) -> int:
    """Queue a retrain for the scheduler, in this process or in the worker holding the lease; the job id.

    503 when no process runs a scheduler (a test app, or ``create_app`` outside ``juicer serve``): nothing would
    ever run the job.
    """
    if not svc.scheduler_reachable:
        raise Problem(503, "No scheduler", "this process runs no scheduler; retrain through `juicer serve`", type="no-scheduler")
    job_id = queue_retrain_job(svc.store, force=force)
    svc.wake("run-queued-jobs")
    return job_id
