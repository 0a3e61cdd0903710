"""What both webhook doors share (``/v1/webhooks/label-studio`` and ``/label-studio-ml/webhook``): small and bounded.

Neither door proves who sent an event (the label job checks every event against Label Studio itself,
:mod:`app.core.intake`), so neither may cost juicer much either:

- a body limit (``service.webhook_max_bytes``, a 413 problem), read without holding more than the limit;
- a per-source rate limit for callers without the API token: a token bucket per remote address in this process
  (``service.webhook_rate_per_s``, ``service.webhook_burst``; a 429 problem with ``Retry-After``);
- a cap on the events waiting for the label job (``service.max_pending_events``; a 503 problem with
  ``Retry-After``); the job takes the oldest first, the label pull catches up with what was refused, and the
  retention job deletes processed events after ``service.keep_events_days``;
- the body's fields checked by one model (:class:`EventFields`): a 400 naming the field, never a 500.
"""

from __future__ import annotations

import math
import threading
import time
from datetime import datetime
from typing import Any

from flask import current_app, request
from pydantic import BaseModel, ConfigDict

from app.http.problems import Problem
from app.services import Services

BUCKETS_KEY = "juicer.webhook_buckets"  # the app's TokenBuckets, in app.extensions


class TokenBuckets:
    """A token bucket per source (``rate_per_s`` refill, ``burst`` deep); at most ``max_sources`` remembered.

    Thread-safe. When more sources than ``max_sources`` are seen, the full buckets are forgotten first (a full
    bucket is what a new source gets anyway), then the oldest.
    """

    def __init__(self, rate_per_s: float, burst: int, max_sources: int = 10_000) -> None:
        self.rate_per_s = float(rate_per_s)
        self.burst = float(burst)
        self.max_sources = max_sources
        self._buckets: dict[str, tuple[float, float]] = {}  # source -> (tokens, when)
        self._lock = threading.Lock()

    def take(self, source: str, now: float | None = None) -> float:
        """Take one token for ``source``: 0 when granted, else the seconds until one is there."""
        now = time.monotonic() if now is None else now
        with self._lock:
            tokens, then = self._buckets.get(source, (self.burst, now))
            tokens = min(self.burst, tokens + (now - then) * self.rate_per_s)
            if tokens >= 1:
                self._buckets[source] = (tokens - 1, now)
                if len(self._buckets) > self.max_sources:
                    self._forget(now)
                return 0.0
            self._buckets[source] = (tokens, now)
            return (1 - tokens) / self.rate_per_s

    def _forget(self, now: float) -> None:
        full = [s for s, (tokens, then) in self._buckets.items() if tokens + (now - then) * self.rate_per_s >= self.burst]
        for source in full:
            del self._buckets[source]
        while len(self._buckets) > self.max_sources:
            del self._buckets[next(iter(self._buckets))]  # dicts keep insertion order: the oldest source first


class _Id(BaseModel):
    model_config = ConfigDict(extra="allow")

    id: int


class _Project(BaseModel):
    model_config = ConfigDict(extra="allow")

    id: int | None = None


class _Task(BaseModel):
    model_config = ConfigDict(extra="allow")

    id: int | None = None
    data: dict[str, Any] | None = None


class _Annotation(_Id):
    task: int | None = None
    created_at: datetime | None = None  # never believed (Label Studio's own record is), but a malformed one is a 400
    updated_at: datetime | None = None


class EventFields(BaseModel):
    """A Label Studio event (``action``, ``project``, ``task``, ``annotation`` or ``annotations``), kept as sent.

    Only the ids are used (juicer reads the rest back from Label Studio); each must be an integer, and a timestamp
    that is sent must be one.
    """

    model_config = ConfigDict(extra="allow")

    action: str | None = None
    project: int | str | _Project | None = None
    task: _Task | None = None
    annotation: _Annotation | None = None
    annotations: list[_Id] | None = None


def admit(svc: Services, trusted: bool) -> None:
    """Before the body is read: the rate limit for a caller without the API token, and the body limit."""
    service = svc.settings.service
    if not trusted:
        buckets = current_app.extensions.get(BUCKETS_KEY)
        if buckets is None:
            buckets = current_app.extensions.setdefault(BUCKETS_KEY, TokenBuckets(service.webhook_rate_per_s, service.webhook_burst))
        wait_s = buckets.take(request.remote_addr or "")
        if wait_s:
            raise Problem(
                429, "Too many events", f"more than {service.webhook_rate_per_s:g} webhook events per second from "
                f"{request.remote_addr}; send fewer", type="too-many-events", headers={"Retry-After": str(math.ceil(wait_s))},
            )  # fmt: skip
    request.max_content_length = service.webhook_max_bytes


def record_event(svc: Services, payload: dict[str, Any], trusted: bool) -> int:
    """Record an event for the label job and wake it; a 503 while ``max_pending_events`` wait (API token holders pass)."""
    limit = svc.settings.service.max_pending_events
    if not trusted and svc.store.pending_event_count() >= limit:
        raise Problem(
            503, "Too many pending events", f"{limit} webhook events already wait for the label job; the label pull "
            "will bring this answer", type="events-full", headers={"Retry-After": "30"},
        )  # fmt: skip
    event_id = svc.store.record_event(payload)
    svc.wake("process-webhooks")
    return event_id
