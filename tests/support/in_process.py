"""A juicer wired in this test process against the session's real Label Studio and the real backbone.

:func:`in_process_juicer` is the setup the Label Studio suites share (the holdout, second-look and service-loop
tests): settings on a free loopback port, a store, a Fashion-MNIST demo seeded into the data folder Label Studio
serves images from, the services built on the given backbone, juicer's own project in Label Studio, the HTTP app
served on a thread (so Label Studio's webhooks and ML-backend calls reach it) and, when a webhook secret is given,
the project's webhook registered. Each call makes a project of its own, so modules share one Label Studio safely.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from tests.support.served import free_port


@dataclass
class InProcessJuicer:
    """A running in-process juicer: its services, base URL, a Flask test client with its API token, the dataset
    it was seeded from and the true label of every item (item id -> class name)."""

    services: Any
    url: str
    client: Any
    dataset: Any
    truth: dict[str, str]


@contextmanager
def in_process_juicer(
    label_studio: Any, backbone: Any, dataset: Any, *, title: str, seed: dict[str, Any], service: dict[str, Any],
    webhook_secret: str | None = None, store_url: str | None = None,
) -> Iterator[InProcessJuicer]:
    """Start the juicer described in the module docstring; stop its HTTP server and scheduler, close its store.

    ``seed``: :func:`app.core.demo.seed_demo`'s keyword arguments (``n_pool``, ``n_holdout``, ``seed``, ...);
    ``service``: ``service.*`` settings over ``pull_interval_s`` 3600 (the port is chosen here); ``title``: the
    prefix of the project's title; ``store_url``: None for SQLite in the data folder.
    """
    from werkzeug.serving import make_server

    from app import create_app
    from app.core.demo import seed_demo
    from app.services import build_services
    from app.store import Store
    from config import load_settings

    data_dir = label_studio.files_root.parent.parent  # Label Studio serves <data_dir>/files/images
    port = free_port()
    ls_settings = {"url": label_studio.url, "token": label_studio.token, "project_title": label_studio.project_title(title)}
    if webhook_secret is not None:
        ls_settings["webhook_secret"] = webhook_secret
    settings = load_settings(
        environ={}, data_dir=data_dir, service={"pull_interval_s": 3600, **service, "port": port},
        label_studio=ls_settings, store={"url": store_url},
    )  # fmt: skip
    store = Store.from_settings(settings)
    http = None
    services = None
    try:
        store.set_meta("classes", list(dataset.class_names))
        seed_demo(store, data_dir, dataset, **seed)
        services = build_services(settings, store=store, backbone=backbone, desk=label_studio.desk())
        services.project = services.desk.ensure_project(list(services.classes), settings.label_studio.project_title)
        app = create_app(services=services)
        http = make_server("127.0.0.1", port, app, threaded=True)
        threading.Thread(target=http.serve_forever, daemon=True).start()
        url = f"http://127.0.0.1:{port}"
        if webhook_secret is not None:
            services.desk.register_webhook(services.project, f"{url}/v1/webhooks/label-studio", services.webhook_secret)
        client = app.test_client()
        client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {services.settings.service.api_token.get_secret_value()}"
        yield InProcessJuicer(services, url, client, dataset, dict(zip(dataset.item_ids, dataset.label_names)))
    finally:
        if services is not None and services.scheduler is not None:
            services.scheduler.shutdown()
        if http is not None:
            http.shutdown()
        store.close()
