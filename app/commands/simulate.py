"""``juicer simulate``: annotators played from the ground truth through the real Label Studio and the service.

Run it against a service started with ``juicer serve`` (the Fashion-MNIST demo): it takes Label Studio's next
task as a person would, posts the true label as the editor does, asks the service to retrain every K labels,
prints one line per model version, and ends with the report's JSON (``GET /v1/report``).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from typing import Any

from app.simulation import ORDERS, DatasetTruth, ServiceClient, Simulation, SimulationError

NAME = "simulate"
HELP = "play annotators from the demo's ground truth through Label Studio and watch the model improve"

logger = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``juicer simulate``."""
    parser.add_argument("--labels", type=int, default=100, metavar="N", help="labels to post (default 100)")
    parser.add_argument(
        "--order",
        choices=ORDERS,
        default="uncertainty",
        help="uncertainty: take Label Studio's next task (least certain first); random: a random open task",
    )
    parser.add_argument("--service", metavar="URL", help="the juicer service (default: service.public_url or host:port)")
    parser.add_argument("--retrain-every", type=int, default=10, metavar="K", help="ask for a retrain every K labels (default 10)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random order (default 0)")
    parser.add_argument(
        "--wait", type=float, default=300.0, metavar="S", help="longest wait for a retrain, a label or the queue (default 300 s)"
    )


def service_url(settings: Any) -> str:
    """Where the service listens, from the settings (``service.public_url``, else ``http://host:port``)."""
    service = settings.service
    if service.public_url:
        return str(service.public_url)
    host = "127.0.0.1" if service.host in ("0.0.0.0", "::", "") else service.host
    return f"http://{host}:{service.port}"


def fashion_mnist_truth(settings: Any) -> DatasetTruth:
    """The demo's ground truth: every Fashion-MNIST item id and its class name."""
    from learner.datasets import load_fashion_mnist

    return DatasetTruth.from_dataset(load_fashion_mnist(settings.fashion_mnist_dir))


def run(args: argparse.Namespace, settings: Any) -> int:
    """Run the simulation; 0 when every label was posted, 1 on an error, 3 when the queue ran dry early."""
    from annotation.desk import desk_from_settings
    from annotation.errors import AnnotationError
    from tqdm import tqdm

    if not getattr(args, "verbose", False):
        logging.getLogger("httpx").setLevel(logging.WARNING)  # one INFO line per request drowns the version lines
    if args.labels < 1 or args.retrain_every < 1:
        print("juicer simulate: --labels and --retrain-every must be at least 1", file=sys.stderr)
        return 2
    from app.secrets import api_token, resolve_secrets

    settings = resolve_secrets(settings)  # the same generated secrets `juicer serve` uses on this data folder
    token = api_token(settings)
    service = ServiceClient(args.service or service_url(settings), token)
    desk = desk_from_settings(settings)
    try:
        model = service.current_model()
        if model is None:
            print(
                f"juicer simulate: the service at {service.base_url} has no model yet; start it with the demo "
                "(`juicer serve`) and wait until it answers GET /readyz",
                file=sys.stderr,
            )
            return 1
        truth = fashion_mnist_truth(settings)
        project = desk.ensure_project(model["classes"], settings.label_studio.project_title)
        print(f"simulating {args.labels} labels in {args.order} order against {service.base_url} and {project.url}")
        with tqdm(total=args.labels, unit="label", file=sys.stderr, leave=False) as bar:
            simulation = Simulation(
                service=service,
                desk=desk,
                project=project,
                truth=truth,
                order=args.order,
                retrain_every=args.retrain_every,
                seed=args.seed,
                label_wait_s=args.wait,
                retrain_wait_s=args.wait,
                queue_wait_s=min(args.wait, 60.0),
                say=tqdm.write,
            )
            result = simulation.run(args.labels, progress=bar.update)
    except (SimulationError, AnnotationError) as exc:
        print(f"juicer simulate: {exc}", file=sys.stderr)
        return 1
    finally:
        service.close()
        desk.close()
    if result.n_skipped:
        print(f"skipped {result.n_skipped} tasks whose items are not in the demo's ground truth")
    print(forecast_check(result.report.get("points", [])))
    print(json.dumps(result.report, indent=2))
    return 0 if result.n_labels >= args.labels else 3


def forecast_check(points: list[dict]) -> str:
    """The forecast fitted on the first half of the versions, beside what the second half measured."""
    from app.reports import forecast_points
    from learner.forecast import half_backtest

    pts = forecast_points(points)
    if len(pts) < 8:
        return f"forecast check: needs at least 8 versions with different label counts, has {len(pts)}"
    check = half_backtest(pts)
    fitted = f"{check['fitted_on'][0]}-{check['fitted_on'][-1]}"
    if check["refused"]:
        return f"forecast check (fitted on versions with {fitted} labels): refused: {check['refused']}"
    lines = [f"forecast check: fitted on the {len(check['fitted_on'])} versions with {fitted} labels "
             f"({check['family']}, backtest error {check['backtest_error']:.1%}), predicting the rest:"]
    for row in check["predictions"]:
        lines.append(f"  {row['n_labels']:>6} labels ({row['multiple']:.1f}x): predicted {row['predicted']:.1%} "
                     f"({row['low']:.1%}-{row['high']:.1%}), measured {row['measured']:.1%}, "
                     f"error {row['error'] * 100:+.1f}pp")
    errors = [abs(row["error"]) for row in check["predictions"]]
    lines.append(f"  mean |error| {100 * sum(errors) / len(errors):.1f}pp; 80% band covered "
                 f"{check['covered']:.0%} of {len(errors)}")
    return "\n".join(lines)
