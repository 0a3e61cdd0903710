"""``juicer serve``: Label Studio, the Fashion-MNIST demo, the first model, the scheduler and the HTTP service.

The preparation runs here (one backbone, the first model); the HTTP service then runs under gunicorn
(:mod:`app.http.server`: threaded workers, timeouts, bounded connections, the scheduler in one worker) on
``service.host:service.port`` (127.0.0.1 by default). Label Studio is started from ``.venv-ls`` unless one
already runs on the data folder (or ``label_studio.url`` points at another). Ctrl-C (or SIGTERM) stops the scheduler, the server, and the
Label Studio this command started.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import sys
from pathlib import Path
from typing import Any

from config import Settings

logger = logging.getLogger(__name__)

NAME = "serve"
HELP = "run Label Studio and the juicer service, seeding a Fashion-MNIST demo on first start"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Demo sizes, bind address, and setup-only mode."""
    parser.add_argument("--demo", action="store_true", help="seed the Fashion-MNIST demo on first start (the default)")
    parser.add_argument("--no-demo", action="store_true", help="do not seed the Fashion-MNIST demo (needs service.classes)")
    parser.add_argument("--seed-labels", type=int, default=1, metavar="K",
                        help="demo: labelled images per class to start from (default 1; 0: none, annotators get "
                             "the query strategy's cold-start picks first)")
    parser.add_argument("--demo-pool", type=int, default=None, help="unlabelled pool size of the demo (default service.demo_pool)")
    parser.add_argument("--holdout", type=int, default=None, help="holdout size of the demo (default service.demo_holdout)")
    parser.add_argument("--images", action="append", metavar="DIR",
                        help="import this folder (or file, or list of paths/URLs) first, then serve it instead of the demo "
                             "(again: the rest of it only; repeatable)")
    parser.add_argument("--classes", default=None, metavar="A,B,C",
                        help="the class names, comma-separated (default service.classes, else the --labelled folder names)")
    parser.add_argument("--labelled", action="store_true",
                        help="with --images: the folder is laid out <class>/<image>; its images are labelled training items")
    parser.add_argument("--host", default=None, help="bind address (default service.host, 127.0.0.1)")
    parser.add_argument("--port", type=int, default=None, help="port (default service.port)")
    parser.add_argument("--workers", type=int, default=None, help="gunicorn worker processes (default service.workers)")
    parser.add_argument("--keep-label-studio", action="store_true", help="leave Label Studio running on exit")
    parser.add_argument("--setup-only", action="store_true", help="do everything up to serving, then exit (checks, CI)")


def _say(message: str) -> None:
    print(message, flush=True)


def _start_label_studio(settings: Settings) -> tuple[str, Any, bool]:
    """(url, its launcher or None, whether this call started it)."""
    from tqdm import tqdm

    from annotation.launcher import launcher_from_settings

    if settings.label_studio.url:
        return settings.label_studio.url, None, False
    launcher = launcher_from_settings(settings)
    already = launcher.running
    first = not (launcher.data_dir / "label_studio.sqlite3").exists()
    with tqdm(total=180, unit="s", desc="starting Label Studio" + (" (first start ~40 s)" if first else ""), disable=already) as bar:
        url = launcher.start(wait=True, timeout_s=180, progress=lambda s: bar.update(max(0, int(s) - bar.n)))
    return url, launcher, not already


def _seed_demo(settings: Settings, store: Any, n_pool: int, n_holdout: int, seed_per_class: int = 1) -> None:
    from app.core.demo import seed_demo
    from learner.datasets import load_fashion_mnist

    counts = store.count_items()
    if counts:
        _say(f"store already holds {sum(counts.values())} items ({counts}); not seeding the demo again")
        return
    _say(f"seeding the demo from Fashion-MNIST ({settings.fashion_mnist_dir}): {seed_per_class} labelled image(s) per class, "
         f"a pool of {n_pool}, a holdout of {n_holdout}")  # fmt: skip
    per_class = math.ceil((n_pool + n_holdout) / 10) + 1 + max(seed_per_class, 1)  # 202 for the default demo
    dataset = load_fashion_mnist(settings.fashion_mnist_dir, per_class_limit=per_class, seed=settings.service.demo_seed)
    if settings.service.classes and list(settings.service.classes) != list(dataset.class_names):
        raise SystemExit(
            f"juicer: service.classes {settings.service.classes} differ from Fashion-MNIST's {dataset.class_names}; "
            "unset service.classes for the demo or run with --no-demo"
        )
    store.set_meta("classes", list(dataset.class_names))
    seed_demo(store, Path(settings.data_dir), dataset, n_pool, n_holdout, seed=settings.service.demo_seed, progress=True,
              seed_per_class=seed_per_class)


def with_classes(settings: Settings, classes: str | None) -> Settings:
    """``settings`` with ``--classes a,b,c`` as ``service.classes`` (checked by the one class-list rule)."""
    if classes is None:
        return settings
    from config.settings import check_class_names

    try:
        names = check_class_names([name for name in classes.split(",")])
    except ValueError as exc:
        raise SystemExit(f"juicer serve: --classes {classes!r}: {exc}") from exc
    return settings.model_copy(update={"service": settings.service.model_copy(update={"classes": names})})


def _import_images(settings: Settings, store: Any, paths: list[str], labelled: bool) -> None:
    """``--images``: the folder imported (checked and registered; embedded with the rest below), the summary said."""
    from app.cli.commands.importing import import_paths

    if not labelled and not (settings.service.classes or store.get_meta("classes")):
        raise SystemExit(
            "juicer serve --images: name the classes (--classes a,b,c or service.classes), or lay the folder out as "
            "<class>/<image> and add --labelled"
        )
    _say(f"importing {', '.join(paths)}{' (labelled <class>/<image>)' if labelled else ''} ...")
    summary = import_paths(settings, paths, labelled=labelled, embed=False, store=store)
    for line in summary.lines()[:21]:
        _say(line)
    if len(summary.skipped) > 20:
        _say(f"  ... and {len(summary.skipped) - 20} more skipped (juicer import {paths[0]} lists them all)")
    if labelled and not (settings.service.classes or store.get_meta("classes")):
        raise SystemExit("juicer serve --images --labelled: found fewer than two class folders with images in them")


def prepare(settings: Settings, args: argparse.Namespace, label_studio_url: str, webhook_url: str | None = None) -> Any:
    """Store, demo, backbone, Label Studio project and webhook (when it answers), first model: services ready."""
    from annotation.desk import desk_from_settings
    from app.services import build_services
    from app.store import Store

    data_dir = Path(settings.data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    store = Store.from_settings(settings)
    if getattr(args, "images", None):
        _import_images(settings, store, args.images, labelled=getattr(args, "labelled", False))
    elif not args.no_demo:
        n_pool = settings.service.demo_pool if args.demo_pool is None else args.demo_pool
        n_holdout = settings.service.demo_holdout if args.holdout is None else args.holdout
        seed_labels = getattr(args, "seed_labels", 1)
        if seed_labels < 0:
            raise SystemExit("juicer serve: --seed-labels must be 0 or more")
        _seed_demo(settings, store, n_pool, n_holdout, seed_per_class=seed_labels)
    _say(f"loading the backbone {settings.learner.backbone} ...")
    services = build_services(settings, store=store, desk=desk_from_settings(settings, url=label_studio_url))
    from app.worker.scheduler import connect_label_studio

    if connect_label_studio(services, webhook_url):
        _say(f"Label Studio project {services.project.title!r} (id {services.project.id}) with {len(services.classes)} classes")
    else:
        _say("Label Studio is not reachable: predictions are served, review tasks wait until it answers")
    items = [row for split in ("seed", "holdout", "pool") for row in store.items_of_split(split)]
    rows = [(r.id, r.content_hash, r.source, r.image_path) for r in items if not r.quarantined]
    if rows:
        _say(f"embedding {len(rows)} images once (cached under {data_dir / 'embeddings'}) ...")
        _, kept = services.trainer.embed_items(rows, progress=True)
        if len(kept) < len(rows):
            _say(f"{len(rows) - len(kept)} items quarantined (image missing or unreadable): GET /v1/items?quarantined=true")
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
            queued = services.trainer.refresh_review_queue()
            _say(f"no model yet: {result.skipped}; {queued} pool items chosen by "
                 f"{settings.service.query_strategy} picks queued for annotators")
    return services


def run(args: argparse.Namespace, settings: Settings) -> int:
    """Prepare everything, then become the gunicorn server (``exec``) until Ctrl-C or SIGTERM; 0 on a clean stop.

    Label Studio being down does not stop the start: predictions are served, review tasks wait in the outbox,
    and a job connects to Label Studio when it is back (``/readyz`` says ``degraded`` meanwhile).
    """
    from annotation.errors import AnnotationError
    from app.core.datadir import prepare_data_dir
    from app.core.files import sweep_temp_files
    from app.core.secrets import api_token, resolve_secrets, secrets_dir

    if not logging.getLogger().isEnabledFor(logging.DEBUG):
        # One line per Label Studio call or job run drowns what matters; -v brings them back.
        for name in ("httpx", "apscheduler.executors.default", "apscheduler.scheduler"):
            logging.getLogger(name).setLevel(logging.WARNING)
    overrides = {key: value for key, value in (("host", args.host), ("port", args.port), ("workers", args.workers)) if value is not None}
    if overrides:
        settings = settings.model_copy(update={"service": settings.service.model_copy(update=overrides)})
    settings = with_classes(settings, getattr(args, "classes", None))
    prepare_data_dir(settings)  # before anything reads an image or creates a file: umask 077, the images moved
    settings = resolve_secrets(settings)  # generated on first start into <data_dir>/secrets/, never printed
    for path in sweep_temp_files(settings.data_dir):
        logger.warning("removed %s, left by a write that was killed", path)
    service = settings.service
    ls_launcher, started_ls = None, False
    try:
        label_studio_url, ls_launcher, started_ls = _start_label_studio(settings)
    except AnnotationError as exc:
        label_studio_url = settings.label_studio.url or f"http://127.0.0.1:{settings.label_studio.port}"
        print(f"juicer: Label Studio did not start ({exc}); serving predictions without it, reviews wait", file=sys.stderr)
    public_url = (service.public_url or f"http://{service.host}:{service.port}").rstrip("/")
    try:
        services = prepare(settings, args, label_studio_url, f"{public_url}/v1/webhooks/label-studio")
    except BaseException:
        if ls_launcher is not None and started_ls and not args.keep_label_studio:
            ls_launcher.stop()
        raise
    where = secrets_dir(settings.data_dir)
    ls = settings.label_studio
    project = services.project.url if services.project is not None else f"{label_studio_url} (not reachable yet)"
    _say(
        "\njuicer is running\n"
        f"  service      {public_url}   (POST /v1/predict, /v1/items, /v1/labels; GET /v1/models; /openapi.json)\n"
        f"  report       {public_url}/report  {public_url}/gallery\n"
        + ("               your browser asks for a login: any user name, the API token as the password\n"
           if api_token(settings) else "")
        + f"  health       {public_url}/healthz  {public_url}/readyz   metrics {public_url}/metrics (Bearer token)\n"
        f"  Label Studio {project}\n"
        f"  login        {ls.username}, password in {where / 'label-studio-password'} (unless label_studio.password is set)\n"
        + (f"  API token    in {where / 'api-token'} (unless service.api_token is set): for /v1/*, the pages, /metrics\n"
           if api_token(settings) else "  API token    NONE: authentication is off (service.api_token: none)\n")
        + f"  server       gunicorn, {service.workers} worker(s) x {service.threads} threads\n"
        + "Ctrl-C stops everything."
    )  # fmt: skip
    if args.setup_only:
        services.store.close()
        if ls_launcher is not None and started_ls and not args.keep_label_studio:
            _say("stopping Label Studio ...")
            ls_launcher.stop()
        return 0
    from app.http.server import write_settings

    services.store.close()
    command = [sys.executable, "-m", "app.http.server", str(write_settings(settings))]
    if ls_launcher is not None and started_ls and not args.keep_label_studio:
        command.append("--stop-label-studio")
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, command)  # TensorFlow from the preparation is not carried into the server
    return 0  # not reached
