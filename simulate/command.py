"""``juicer simulate``: annotators played from the ground truth through the real Label Studio and the service.

Run it against a service started with ``juicer serve`` (the Fashion-MNIST demo): it takes Label Studio's next
task as a person would, posts the true label as the editor does, asks the service to retrain every K labels,
prints one line per model version, and ends with the report's JSON (``GET /v1/report``).

``juicer simulate --offline`` runs the same loop on cached embeddings with no Label Studio and no service
(:mod:`learner.offline`): every strategy from the same holdout and start labels per seed, ``random`` always
beside them; it prints a table and writes ``simulate.json`` and ``simulate.png`` into ``--out``.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from typing import Any

from simulate.driver import ORDERS, DatasetTruth, ServiceClient, Simulation, SimulationError

NAME = "simulate"
HELP = "play annotators from the demo's ground truth through Label Studio and watch the model improve"

logger = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``juicer simulate``."""
    parser.add_argument("--labels", type=int, default=None, metavar="N",
                        help="labels to post (default 100); --offline: labels to end at (default 300)")
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
    parser.add_argument("--noise", type=float, default=0.0, metavar="RATE",
                        help="annotators answer wrongly with this probability (default 0: always right)")
    parser.add_argument("--accept-guess", type=float, default=0.0, metavar="RATE",
                        help="a wrong annotator takes the pre-selected guess (when it is wrong) with this probability; "
                             "otherwise, and on a task with no guess, a wrong class at random (default 0)")
    offline = parser.add_argument_group("offline (no Label Studio, no service: the loop on cached embeddings)")
    offline.add_argument("--offline", action="store_true", help="run the loop offline and compare strategies")
    offline.add_argument("--dataset", default="fashion-mnist", help="'fashion-mnist' or a folder with a sub-folder per class")
    offline.add_argument("--per-class-limit", type=int, default=None, metavar="N", help="at most N images per class")
    offline.add_argument("--start-per-class", type=int, default=1, metavar="K",
                         help="random labels per class to start from, the same for every strategy (0: none; default 1)")
    offline.add_argument("--batch", type=int, default=10, metavar="B", help="labels per round (default 10)")
    offline.add_argument("--strategies", default="auto,least_confidence,typical,random", metavar="A,B,...",
                         help="query strategies to compare (random is always run; default %(default)s)")
    offline.add_argument("--seeds", type=int, default=3, metavar="S", help="seeds 0..S-1 (default 3)")
    offline.add_argument("--head", choices=("semi", "supervised"), default="semi", help="the head every strategy trains")
    offline.add_argument("--backbone", default=None, metavar="NAME|HANDLE", help="default: learner.backbone")
    offline.add_argument("--out", default=None, metavar="DIR", help="where simulate.json/.png go (default <data_dir>/simulate)")
    offline.add_argument("--checks", action="store_true",
                         help="check labels each round: cleanlab's suspects get a second look (another annotator, no "
                              "guess) within the same label budget; suspected holdout labels are asked again")
    offline.add_argument("--margin-sample", type=int, default=None, metavar="N",
                         help="diverse_margin / auto score a seeded sample of N pool rows (default: "
                              "learner.pool_sample.margin)")
    offline.add_argument("--cluster-sample", type=int, default=None, metavar="N",
                         help="typical / coverage / auto's typical picks cluster a seeded sample of N pool rows "
                              "(default: learner.pool_sample.cluster)")
    offline.add_argument("--semi-head-sample", type=int, default=None, metavar="N",
                         help="the semi-supervised head learns from a seeded sample of N unlabelled rows (default: "
                              "learner.pool_sample.semi_head)")
    offline.add_argument("--no-progress", action="store_true", help="no progress bars")


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


def noise_problem(args: argparse.Namespace) -> str | None:
    """What is wrong with ``--noise`` / ``--accept-guess`` / ``--checks``, or None."""
    for flag in ("noise", "accept_guess"):
        value = getattr(args, flag, 0.0)
        if not 0.0 <= value <= 1.0:
            return f"--{flag.replace('_', '-')} must be a probability between 0 and 1, got {value:g}"
    if getattr(args, "checks", False) and not getattr(args, "offline", False):
        return "--checks is for --offline; through Label Studio the service runs the checks itself"
    return None


def run(args: argparse.Namespace, settings: Any) -> int:
    """Run the simulation; 0 when every label was posted, 1 on an error, 3 when the queue ran dry early."""
    from annotation.desk import desk_from_settings
    from simulate.annotator import AnnotatorDesk
    from annotation.errors import AnnotationError
    from learner.noise import NoisyAnnotator
    from tqdm import tqdm

    problem = noise_problem(args)
    if problem:
        print(f"juicer simulate: {problem}", file=sys.stderr)
        return 2
    if getattr(args, "offline", False):
        return run_offline_command(args, settings)
    if args.labels is None:
        args.labels = 100
    if not getattr(args, "verbose", False):
        logging.getLogger("httpx").setLevel(logging.WARNING)  # one INFO line per request drowns the version lines
    if args.labels < 1 or args.retrain_every < 1:
        print("juicer simulate: --labels and --retrain-every must be at least 1", file=sys.stderr)
        return 2
    from app.core.secrets import api_token, resolve_secrets

    settings = resolve_secrets(settings)  # the same generated secrets `juicer serve` uses on this data folder
    token = api_token(settings)
    service = ServiceClient(args.service or service_url(settings), token)
    desk = desk_from_settings(settings, desk_class=AnnotatorDesk)
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
        annotator = NoisyAnnotator(args.noise, args.accept_guess, seed=[args.seed, 2])
        noisy = "" if annotator.perfect else f", {args.noise:.0%} wrong (accepting a wrong guess {args.accept_guess:.0%})"
        print(f"simulating {args.labels} labels in {args.order} order against {service.base_url} and {project.url}{noisy}")
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
                annotator=annotator,
                classes=model["classes"],
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
    if result.n_wrong:
        print(f"{result.n_wrong} of {result.n_labels} labels posted wrong ({result.n_took_guess} the pre-selected guess)")
    print(forecast_check(result.report.get("points", [])))
    print(json.dumps(result.report, indent=2))
    return 0 if result.n_labels >= args.labels else 3


def run_offline_command(args: argparse.Namespace, settings: Any) -> int:
    """``juicer simulate --offline``: 0 on success, 1 on a learner error, 2 on bad arguments."""
    from pathlib import Path

    from learner.errors import LearnerError
    from learner.query import STRATEGIES

    strategies = [name.strip() for name in args.strategies.split(",") if name.strip()]
    unknown = [name for name in strategies if name not in STRATEGIES]
    labels = 300 if args.labels is None else args.labels
    problem = (
        f"unknown strategies {', '.join(unknown)}; choose among {', '.join(STRATEGIES)}" if unknown
        else "--seeds, --batch and --labels must be at least 1" if min(args.seeds, args.batch, labels) < 1
        else "--start-per-class must be 0 or more" if args.start_per_class < 0
        else sample_problem(args)
    )
    if problem:
        print(f"juicer simulate: {problem}", file=sys.stderr)
        return 2
    try:
        return _run_offline(args, settings, strategies, labels, Path(args.out or Path(settings.data_dir) / "simulate"))
    except (LearnerError, ValueError) as exc:
        print(f"juicer simulate: {exc}", file=sys.stderr)
        return 1


def sample_problem(args: argparse.Namespace) -> str | None:
    """What is wrong with ``--margin-sample`` / ``--cluster-sample`` / ``--semi-head-sample``, or None."""
    for flag in ("margin_sample", "cluster_sample", "semi_head_sample"):
        value = getattr(args, flag, None)
        if value is not None and value < 1:
            return f"--{flag.replace('_', '-')} must be a positive number of pool rows, got {value}"
    return None


def pool_samples(args: argparse.Namespace, settings: Any) -> dict[str, int]:
    """The pool samples of an offline run: the flags, else the settings' ``learner.pool_sample``."""
    configured = settings.learner.pool_sample
    return {
        "margin": configured.margin if getattr(args, "margin_sample", None) is None else args.margin_sample,
        "cluster": configured.cluster if getattr(args, "cluster_sample", None) is None else args.cluster_sample,
        "semi_head": configured.semi_head if getattr(args, "semi_head_sample", None) is None else args.semi_head_sample,
    }


def _run_offline(args: argparse.Namespace, settings: Any, strategies: list[str], labels: int, out_dir: Any) -> int:
    import time
    from pathlib import Path

    from tqdm import tqdm
    from tqdm.contrib.logging import logging_redirect_tqdm

    from learner.backbones import load_backbone, resolve_backbone
    from learner.cache import EmbeddingCache, embed_sources
    from learner.datasets import load_dataset
    from learner.head import SoftmaxHead
    from learner.offline import Annotators, run_offline
    from learner.plots import plot_simulation
    from learner.semi import SemiSupervisedHead

    started = time.perf_counter()
    progress = not args.no_progress
    dataset = load_dataset(args.dataset, fashion_mnist_dir=settings.fashion_mnist_dir,
                           per_class_limit=args.per_class_limit, seed=0, max_pixels=settings.learner.max_image_pixels)
    print(dataset.describe())
    spec = resolve_backbone(args.backbone or settings.learner.backbone, settings.data_dir,
                            input_size=settings.learner.input_size)
    backbone = load_backbone(spec, batch_size=settings.learner.batch_size,
                             mixed_precision=settings.learner.mixed_precision)
    with EmbeddingCache(Path(settings.data_dir) / "embeddings", backbone.id) as cache:
        embeddings = embed_sources(backbone, cache, dataset.sources, progress=progress)
    semi = args.head == "semi"
    samples = pool_samples(args, settings)  # the service's own settings (learner.pool_sample), or the flags
    make_head = ((lambda seed: SemiSupervisedHead(random_state=seed, max_unlabelled=samples["semi_head"])) if semi
                 else (lambda seed: SoftmaxHead(random_state=seed)))
    names = list(dict.fromkeys([*strategies, "random"]))
    first = args.start_per_class * len(dataset.class_names)
    rounds = 1 + -(-(labels - first) // args.batch) if labels > first else 1
    # The per-seed log lines are written above the bar, not through it.
    with logging_redirect_tqdm(), tqdm(total=args.seeds * len(names) * rounds, unit="fit", desc="simulating",
                                       disable=not progress) as bar:
        result = run_offline(
            embeddings, dataset.labels, make_head, strategies=names, seeds=range(args.seeds),
            start_per_class=args.start_per_class, n_labels=labels, batch=args.batch, semi_supervised=semi,
            progress=bar.update,
            query_params={"margin_sample": samples["margin"], "cluster_sample": samples["cluster"]},
            annotators=Annotators(args.noise, args.accept_guess, checks=args.checks and args.noise > 0),
        )
    document = result.to_dict()
    document["settings"].update(dataset=args.dataset, backbone=spec.name, head=args.head,
                                per_class_limit=args.per_class_limit, n_images=len(dataset), pool_sample=samples)
    document["timing_s"] = round(time.perf_counter() - started, 1)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "simulate.json").write_text(json.dumps(document, indent=2) + "\n")
    plot_simulation(document, out_dir / "simulate.png")
    print()
    noisy = (f", {args.noise:.0%} of answers wrong (a wrong guess accepted {args.accept_guess:.0%}), "
             f"{'with' if args.checks else 'no'} label checks; accuracy against the true labels" if args.noise else "")
    print(f"{args.head} head, {args.seeds} seed(s), start {args.start_per_class}/class, rounds of {args.batch}{noisy}:")
    print(result.table())
    print(f"wrote {out_dir / 'simulate.json'} and {out_dir / 'simulate.png'} ({document['timing_s']} s)")
    return 0


def forecast_check(points: list[dict]) -> str:
    """The forecast fitted on the first half of the versions, beside what the second half measured."""
    from app.http.reports import forecast_points
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
