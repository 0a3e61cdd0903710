"""Prometheus metrics for one app instance, and the hooks that feed them.

Each :class:`Metrics` owns its own ``CollectorRegistry`` (never prometheus_client's global one), so two apps
in one process, as in tests, do not clash. Request metrics are recorded by hooks that
:func:`install_metrics` adds; state that lives in the store (queue length, labels, the current model) is
read at scrape time by a ``refresh`` callback, so ``/metrics`` is right even after a restart or when
another process changed the store.

Exposed (prefix ``juicer_``)::

    http_requests_total{endpoint, method, status}    counter    endpoint = the URL rule, "<unmatched>" for 404s
    http_request_duration_seconds{endpoint, method}  histogram
    predictions_total{decision}                      counter    accept / review
    review_queue_length                              gauge      review tasks open in Label Studio
    review_tasks{status}                             gauge      pending / sent / failed / labelled
    labels{source}                                   gauge      labels in the store by source
    webhook_events{state}                            gauge      pending / failed (kept until retention) / dropped
                                                                (ever: events from projects juicer does not serve)
    model_holdout_accuracy                           gauge      argmax accuracy of the serving model
    model_labels                                     gauge      labels the serving model was trained on
    model_info{model_version}                        gauge = 1  which version serves
    scheduler_running                                gauge      1 in the process holding the scheduler lease

Several workers (``juicer serve --workers N``): the server turns on prometheus-client's multiprocess mode
(``app.http.server.use_multiprocess_dir``, before any worker starts and before prometheus_client is imported), every worker writes its values to files in that folder,
and a scrape of any worker answers for all of them: counters and histograms add up; the store's gauges show the
most recent value a live worker read; ``model_info`` carries a ``pid`` label per live worker (the version each
one served its last request with), so a model swap is visible on every worker.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Callable, Iterable, Mapping

from flask import Flask, Response, g, request
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest, multiprocess
from prometheus_client.exposition import CONTENT_TYPE_LATEST

logger = logging.getLogger(__name__)

UNMATCHED = "<unmatched>"
# Latency buckets from 5 ms (a cached health check) to 30 s (a large batch on the CPU).
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"  # prometheus-client's own switch (app.http.server sets it before the fork)


def multiprocess_on() -> bool:
    """Whether this process writes its metric values to a multiprocess folder (set by the server)."""
    return bool(os.environ.get(MULTIPROC_ENV))


class Metrics:
    """The service's metrics, registered in a registry of their own."""

    def __init__(self, registry: CollectorRegistry | None = None, namespace: str = "juicer") -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        common = {"namespace": namespace, "registry": self.registry}
        self.requests = Counter(
            "http_requests", "HTTP requests answered, by URL rule, method and status", ["endpoint", "method", "status"], **common
        )
        self.request_latency = Histogram(
            "http_request_duration_seconds",
            "Time to answer an HTTP request, by URL rule and method",
            ["endpoint", "method"],
            buckets=LATENCY_BUCKETS,
            **common,
        )
        self.predictions = Counter("predictions", "Images predicted, by decision (accept or review)", ["decision"], **common)
        # Multiprocess modes (ignored in one process): store state is the same for every worker, the newest read
        # wins; model_info is per worker (a pid label), so a swap can be seen reaching each of them.
        store_state = {**common, "multiprocess_mode": "livemostrecent"}
        self.review_queue_length = Gauge("review_queue_length", "Review tasks waiting for annotators", **store_state)
        self.review_tasks = Gauge("review_tasks", "Review tasks by status (failed: gave up, see POST /v1/reviews/retry)", ["status"], **store_state)
        self.labels = Gauge("labels", "Labels in the store, by source", ["source"], **store_state)
        self.webhook_events = Gauge(
            "webhook_events", "Webhook events: pending, failed (kept until retention), dropped (ever: not a served project)",
            ["state"], **store_state,
        )  # fmt: skip
        self.holdout_accuracy = Gauge("model_holdout_accuracy", "Holdout accuracy (argmax) of the serving model", **store_state)
        self.model_labels = Gauge("model_labels", "Labels the serving model was trained on", **store_state)
        self.model_info = Gauge(
            "model_info", "The model version that serves (value 1; one series per worker process)", ["model_version"],
            **common, multiprocess_mode="liveall",
        )  # fmt: skip
        self.scheduler_running = Gauge(
            "scheduler_running", "1 in the process that holds the scheduler lease (one series per worker process)",
            **common, multiprocess_mode="liveall",
        )  # fmt: skip
        self._model_version: str | None = None

    def observe_request(self, endpoint: str, method: str, status: int, seconds: float | None) -> None:
        """Count one answered request and, when known, its latency."""
        self.requests.labels(endpoint, method, str(status)).inc()
        if seconds is not None:
            self.request_latency.labels(endpoint, method).observe(seconds)

    def observe_predictions(self, decisions: Iterable[str]) -> None:
        """Count predictions by decision (``"accept"``, ``"review"``)."""
        for decision in decisions:
            self.predictions.labels(decision).inc()

    def set_review_queue_length(self, n_open: int) -> None:
        """The number of review tasks waiting for annotators."""
        self.review_queue_length.set(n_open)

    def set_review_tasks(self, counts_by_status: Mapping[str, int]) -> None:
        """Review tasks per status (pending, sent, failed, labelled)."""
        for status, count in counts_by_status.items():
            self.review_tasks.labels(status=status).set(count)

    def set_labels(self, counts_by_source: Mapping[str, int]) -> None:
        """Labels in the store by source; sources not given are dropped (in one process: multiprocess files keep them)."""
        if not multiprocess_on():
            self.labels.clear()
        for source, count in counts_by_source.items():
            self.labels.labels(source).set(count)

    def set_webhook_events(self, counts_by_state: Mapping[str, int]) -> None:
        """Webhook events by state (pending, failed, dropped)."""
        for state, count in counts_by_state.items():
            self.webhook_events.labels(state=state).set(count)

    def set_model(self, model_version: str | None, holdout_accuracy: float | None, n_labels: int | None) -> None:
        """The serving model: its version, holdout accuracy and the labels it used (None: no model yet)."""
        if multiprocess_on() and self._model_version is not None and self._model_version != model_version:
            self.model_info.labels(self._model_version).set(0)  # the file of the old series stays: mark it not serving
        self._model_version = model_version
        if not multiprocess_on():
            self.model_info.clear()
        if model_version is None:
            self.holdout_accuracy.set(float("nan"))
            self.model_labels.set(0)
            return
        self.model_info.labels(model_version).set(1)
        self.holdout_accuracy.set(float("nan") if holdout_accuracy is None else holdout_accuracy)
        self.model_labels.set(n_labels or 0)

    def render(self) -> bytes:
        """The registry in Prometheus' text exposition format (every worker's values in multiprocess mode)."""
        if multiprocess_on():
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
            return generate_latest(registry)
        return generate_latest(self.registry)

    @property
    def model_version(self) -> str | None:
        """The version :meth:`set_model` last set (None before)."""
        return self._model_version


_START_KEY = "_juicer_metrics_started"
HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def install_metrics(
    app: Flask,
    metrics: Metrics,
    *,
    refresh: Callable[[Metrics], None] | None = None,
    path: str = "/metrics",
) -> None:
    """Record every request of ``app`` in ``metrics`` and serve them at ``path``.

    ``refresh(metrics)`` runs at each scrape to copy store state into the gauges; if it fails the scrape
    still answers (with the previous values) and the error is logged.
    """

    def start_timer() -> None:
        setattr(g, _START_KEY, time.perf_counter())

    def record(response: Response) -> Response:
        started = getattr(g, _START_KEY, None)
        seconds = None if started is None else time.perf_counter() - started
        rule = request.url_rule.rule if request.url_rule is not None else UNMATCHED
        method = request.method if request.method in HTTP_METHODS else "other"  # a client's invented verb is no new series
        metrics.observe_request(rule, method, response.status_code, seconds)
        return response

    # First among the before-request hooks, so that a request refused by an earlier hook (auth) is timed too.
    app.before_request_funcs.setdefault(None, []).insert(0, start_timer)
    app.after_request(record)

    def scrape() -> Response:
        """Prometheus metrics (text exposition format)."""
        if refresh is not None:
            try:
                refresh(metrics)
            except Exception:  # a broken store must not take monitoring down with it
                logger.exception("refreshing metrics from the store failed; serving the previous values")
        return Response(metrics.render(), content_type=CONTENT_TYPE_LATEST)

    from app.http.openapi import READ_AUTH, Answers, spec

    documented = spec.validate(resp=Answers("HTTP_200", media="text/plain", problems=(401,)), security=READ_AUTH)(scrape)
    app.add_url_rule(path, endpoint="metrics", view_func=documented, methods=["GET"])
    app.extensions["juicer_metrics"] = metrics
