"""``juicer serve``: Label Studio, the Fashion-MNIST demo, the first model, the scheduler and the HTTP service.

One process: one backbone, one scheduler, a threaded werkzeug server on ``service.host:service.port``
(127.0.0.1 by default). Label Studio is started from ``.venv-ls`` unless one already runs on the data folder
(or ``label_studio.url`` points at another). Ctrl-C (or SIGTERM) stops the scheduler, the server, and the
Label Studio this command started.
"""

from __future__ import annotations

import argparse
import logging
import math
import signal
import sys
import threading
from pathlib import Path
from typing import Any

from config import Settings

logger = logging.getLogger(__name__)

NAME = "serve"
HELP = "run Label Studio and the juicer service, seeding a Fashion-MNIST demo on first start"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Demo sizes, bind address, and setup-only mode."""
    parser.add_argument("--no-demo", action="store_true", help="do not seed the Fashion-MNIST demo (needs service.classes)")
    parser.add_argument("--demo-pool", type=int, default=None, help="unlabelled pool size of the demo (default service.demo_pool)")
    parser.add_argument("--holdout", type=int, default=None, help="holdout size of the demo (default service.demo_holdout)")
    parser.add_argument("--host", default=None, help="bind address (default service.host, 127.0.0.1)")
    parser.add_argument("--port", type=int, default=None, help="port (default service.port)")
    parser.add_argument("--keep-label-studio", action="store_true", help="leave Label Studio running on exit")
    parser.add_argument("--setup-only", action="store_true", help="do everything up to serving, then exit (checks, CI)")


def _say(message: str) -> None:
    print(message, flush=True)


def _start_label_studio(settings: Settings) -> tuple[str, Any, bool]:
    """(url, server or None, whether this call started it)."""
    from tqdm import tqdm

    from annotation.server import server_from_settings

    if settings.label_studio.url:
        return settings.label_studio.url, None, False
    server = server_from_settings(settings)
    already = server.running
    first = not (server.data_dir / "label_studio.sqlite3").exists()
    with tqdm(total=180, unit="s", desc="starting Label Studio" + (" (first start ~40 s)" if first else ""), disable=already) as bar:
        url = server.start(wait=True, timeout_s=180, progress=lambda s: bar.update(max(0, int(s) - bar.n)))
    return url, server, not already


def _seed_demo(settings: Settings, store: Any, n_pool: int, n_holdout: int) -> None:
    from app.demo import seed_demo
    from learner.datasets import load_fashion_mnist

    counts = store.count_items()
    if counts:
        _say(f"store already holds {sum(counts.values())} items ({counts}); not seeding the demo again")
        return
    _say(f"seeding the demo from Fashion-MNIST ({settings.fashion_mnist_dir}): 1 labelled image per class, "
         f"a pool of {n_pool}, a holdout of {n_holdout}")  # fmt: skip
    per_class = math.ceil((n_pool + n_holdout) / 10) + 2
    dataset = load_fashion_mnist(settings.fashion_mnist_dir, per_class_limit=per_class, seed=settings.service.demo_seed)
    if settings.service.classes and list(settings.service.classes) != list(dataset.class_names):
        raise SystemExit(
            f"juicer: service.classes {settings.service.classes} differ from Fashion-MNIST's {dataset.class_names}; "
            "unset service.classes for the demo or run with --no-demo"
        )
    store.set_meta("classes", list(dataset.class_names))
    seed_demo(store, Path(settings.data_dir), dataset, n_pool, n_holdout, seed=settings.service.demo_seed, progress=True)


def prepare(settings: Settings, args: argparse.Namespace, label_studio_url: str) -> Any:
    """Store, demo, backbone, Label Studio project, first model, webhook: the services ready to serve."""
    from annotation.desk import desk_from_settings
    from app.services import build_services
    from app.store import Store

    data_dir = Path(settings.data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    store = Store.from_settings(settings)
    if not args.no_demo:
        n_pool = settings.service.demo_pool if args.demo_pool is None else args.demo_pool
        n_holdout = settings.service.demo_holdout if args.holdout is None else args.holdout
        _seed_demo(settings, store, n_pool, n_holdout)
    _say(f"loading the backbone {settings.learner.backbone} ...")
    services = build_services(settings, store=store, desk=desk_from_settings(settings, url=label_studio_url))
    services.project = services.desk.ensure_project(list(services.classes), settings.label_studio.project_title)
    _say(f"Label Studio project {services.project.title!r} (id {services.project.id}) with {len(services.classes)} classes")
    items = [row for split in ("seed", "holdout", "pool") for row in store.items_of_split(split)]
    sources = [services.trainer.source_for(r["id"], r["content_hash"], r["source"], r["image_path"]) for r in items if r["image_path"]]
    if sources:
        _say(f"embedding {len(sources)} images once (cached under {data_dir / 'embeddings'}) ...")
        services.embeddings.embed(sources, progress=True)
    current = services.models.current
    if current is not None:
        accuracy = "n/a" if current.holdout_accuracy is None else f"{current.holdout_accuracy:.1%}"
        _say(f"serving the last good model {current.version}: {current.n_labels} labels, holdout accuracy {accuracy}")
    else:
        result = services.trainer.retrain(reason="first model", progress=False)
        if result.version:
            accuracy = "n/a" if result.holdout_accuracy is None else f"{result.holdout_accuracy:.1%}"
            _say(f"first model {result.version}: {result.n_labels} labels, holdout accuracy {accuracy}, "
                 f"{result.queued_for_review} pool items queued for review")  # fmt: skip
        else:
            _say(f"no model yet: {result.skipped}")
    return services


def run(args: argparse.Namespace, settings: Settings) -> int:
    """Run everything until Ctrl-C; 0 on a clean stop."""
    from werkzeug.serving import make_server

    from annotation.errors import AnnotationError
    from app import create_app
    from app.jobs import Jobs

    if not logging.getLogger().isEnabledFor(logging.DEBUG):
        # One line per Label Studio call or job run drowns what matters; -v brings them back.
        for name in ("httpx", "apscheduler.executors.default", "apscheduler.scheduler"):
            logging.getLogger(name).setLevel(logging.WARNING)
    from app.secrets import api_token, resolve_secrets, secrets_dir

    settings = resolve_secrets(settings)  # generated on first start into <data_dir>/secrets/, never printed
    service = settings.service
    host = args.host or service.host
    port = args.port or service.port
    try:
        label_studio_url, ls_server, started_ls = _start_label_studio(settings)
    except AnnotationError as exc:
        print(f"juicer: Label Studio did not start: {exc}", file=sys.stderr)
        return 1
    jobs = None
    try:
        services = prepare(settings, args, label_studio_url)
        public_url = (service.public_url or f"http://{host}:{port}").rstrip("/")
        webhook_url = f"{public_url}/v1/webhooks/label-studio"
        services.desk.register_webhook(services.project, webhook_url, services.webhook_secret)
        app = create_app(services=services)
        http = make_server(host, port, app, threaded=True)
        if not args.setup_only:
            jobs = Jobs(services)
            jobs.start()
        ls = settings.label_studio
        where = secrets_dir(settings.data_dir)
        _say(
            "\njuicer is running\n"
            f"  service      {public_url}   (POST /v1/predict, /v1/items, /v1/labels; GET /v1/models)\n"
            f"  report       {public_url}/report\n"
            f"  health       {public_url}/healthz  {public_url}/readyz  {public_url}/metrics\n"
            f"  Label Studio {services.project.url}\n"
            f"  login        {ls.username}, password in {where / 'label-studio-password'} (unless label_studio.password is set)\n"
            + (f"  API token    required for /v1/*: in {where / 'api-token'} (unless service.api_token is set)\n"
               if api_token(settings) else "  API token    NONE: authentication is off (service.api_token: none)\n")
            + "Ctrl-C stops everything."
        )
        if args.setup_only:
            http.server_close()
            return 0

        def on_signal(signum: int, _frame: Any) -> None:
            threading.Thread(target=http.shutdown, daemon=True).start()

        signal.signal(signal.SIGTERM, on_signal)
        try:
            http.serve_forever()
        except KeyboardInterrupt:
            pass
        finally:
            http.server_close()
        return 0
    except AnnotationError as exc:
        print(f"juicer: Label Studio refused or failed: {exc}", file=sys.stderr)
        return 1
    finally:
        if jobs is not None:
            jobs.shutdown(wait=True)
        if ls_server is not None and started_ls and not args.keep_label_studio:
            _say("stopping Label Studio ...")
            ls_server.stop()
