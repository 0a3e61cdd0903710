"""juicer's shell: the HTTP service, the scheduler, the command line, and the wiring between them.

``create_app(settings=None, services=None)`` builds the Flask app (Flask's application-factory pattern). It
wires the real parts from ``settings`` unless ``services`` are handed in (tests pass fakes), and it never
starts a scheduler: ``juicer serve`` starts the one scheduler of the process (see :mod:`app.worker.scheduler`).
"""

from __future__ import annotations

from typing import Any

from flask import Flask


def create_app(settings: Any = None, services: Any = None) -> Flask:
    """The Flask app for ``settings`` (loaded from the environment when None) or for ready-made ``services``."""
    from app.http.api import api
    from app.http.auth import install_guards
    from app.http.metrics import Metrics, install_metrics
    from app.http.jsonbody import request_class
    from app.http.ml_backend import ml_backend
    from app.http.pages import web
    from app.http.problems import register_error_handlers
    from app.services import build_services

    if services is None:
        if settings is None:
            from config import load_settings

            settings = load_settings()
        services = build_services(settings)
    app = Flask(__name__, static_folder=None)  # no /static route: every route is in the OpenAPI document
    app.request_class = request_class(services.settings.service.max_json_depth)  # JSON bodies parsed as a stream
    app.config["MAX_CONTENT_LENGTH"] = services.settings.service.max_request_bytes
    app.json.sort_keys = False
    app.extensions["juicer"] = services
    register_error_handlers(app)
    if services.metrics is None:
        services.metrics = Metrics()
    metrics = services.metrics
    install_metrics(app, metrics, refresh=lambda m: _refresh_metrics(services, m))

    @app.after_request
    def note_serving_model(response: Any) -> Any:  # with several workers each one's model_info is its own
        model = services.models.current
        if model is not None and model.version != metrics.model_version:
            metrics.set_model(model.version, model.holdout_accuracy, model.n_labels)
        return response

    install_guards(app)
    app.register_blueprint(api)
    app.register_blueprint(web)
    app.register_blueprint(ml_backend)  # Label Studio's ML-backend protocol under /label-studio-ml
    return app


def _refresh_metrics(services: Any, metrics: Any) -> None:
    """Copy the store's state into the gauges at scrape time."""
    counts = services.store.review_counts()
    metrics.set_review_queue_length(counts.get("pending", 0) + counts.get("sent", 0))
    metrics.set_review_tasks(counts)
    metrics.set_labels(services.store.label_counts_by_source())
    metrics.set_webhook_events(services.store.event_counts())
    model = services.models.current
    if model is None:
        metrics.set_model(None, None, None)
    else:
        metrics.set_model(model.version, model.holdout_accuracy, model.n_labels)

