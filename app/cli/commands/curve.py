"""``juicer curve``: holdout accuracy against the number of labels (the origin study's data-size curve).

Loads a dataset (Fashion-MNIST from the Debian idx files, or a folder per class), embeds every image once
through the embedding cache (``<data_dir>/embeddings``), fits a fresh head for 13 budgets x N seeds, prints a
table and writes ``curve.json``, ``curve.csv`` and ``curve.png`` into ``--out``. The default head is the
semi-supervised one (:class:`learner.semi.SemiSupervisedHead`: the rest of the pool, never the holdout, is its
unlabelled data); the plain :class:`learner.head.SoftmaxHead` is fitted beside it on the same picks and shown
in the table's comparison columns (``curve.json``'s ``supervised``). ``--head supervised`` runs the plain
head alone (the origin study's protocol).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from config import Settings
from learner.errors import LearnerError

NAME = "curve"
HELP = "measure holdout accuracy against labels per class (13 budgets x N seeds) and plot it"

logger = logging.getLogger(__name__)

FASHION_MNIST = "fashion-mnist"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``juicer curve``."""
    parser.add_argument("--dataset", default=FASHION_MNIST,
                        help="'fashion-mnist' (Debian idx files) or a folder with one sub-folder of images per class")
    parser.add_argument("--per-class-limit", type=int, default=None, metavar="N",
                        help="use at most N images per class, picked at random (seed 0); default: all")
    parser.add_argument("--seeds", type=int, default=3, metavar="N",
                        help="independent repeats (holdout and picks), seeds 0..N-1 (default 3)")
    parser.add_argument("--backbone", default=None, metavar="NAME|HANDLE",
                        help="efficientnet-lite0/1/2, inception-v3, a TF-Hub URL or a SavedModel folder "
                             "(default: learner.backbone)")
    parser.add_argument("--input-size", type=int, default=None, metavar="PIXELS",
                        help="override the backbone's input size")
    parser.add_argument("--out", type=Path, default=None, metavar="DIR",
                        help="where to write curve.json, curve.csv and curve.png (default: <data_dir>/curve)")
    parser.add_argument("--augment", type=int, default=0, metavar="K",
                        help="add K augmented copies (flip, crop, brightness) of every training image (default 0)")
    parser.add_argument("--holdout", type=float, default=0.1, metavar="FRACTION",
                        help="share of every class held out for scoring (default 0.1)")
    parser.add_argument("--budgets", default=None, metavar="A,B,...",
                        help="only these budgets, e.g. 1/class,3/class,5%%,100%% (default: all 13)")
    parser.add_argument("--head", choices=("semi", "supervised"), default="semi",
                        help="semi: soft k-means over the unlabelled pool, then the softmax head (default), with "
                             "the plain head beside it; supervised: the plain softmax head only")
    parser.add_argument("--forecast-max-multiple", type=float, default=10.0, metavar="X",
                        help="the forecast fitted on budgets up to 10%% answers up to X times its largest n "
                             "(default 10, so that 100%% is predicted; the service's default is 4)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def _load_dataset(args: argparse.Namespace, settings: Settings) -> Any:
    from learner.datasets import load_dataset

    return load_dataset(args.dataset, fashion_mnist_dir=settings.fashion_mnist_dir,
                        per_class_limit=args.per_class_limit, seed=0, max_pixels=settings.learner.max_image_pixels)


def _validate(args: argparse.Namespace) -> str | None:
    if args.seeds < 1:
        return "--seeds must be at least 1"
    if args.per_class_limit is not None and args.per_class_limit < 2:
        return "--per-class-limit must be at least 2 (one image to hold out, one to train on)"
    if args.augment < 0:
        return "--augment must be 0 or more"
    if not 0 < args.holdout < 1:
        return "--holdout must be a fraction between 0 and 1"
    if getattr(args, "budgets", None):
        from learner.curve import DEFAULT_BUDGETS

        unknown = set(args.budgets.split(",")) - {b.name for b in DEFAULT_BUDGETS}
        if unknown:
            return f"unknown budgets {', '.join(sorted(unknown))}; choose among {', '.join(b.name for b in DEFAULT_BUDGETS)}"
    if args.forecast_max_multiple < 1:
        return "--forecast-max-multiple must be at least 1"
    return None


def run(args: argparse.Namespace, settings: Settings) -> int:
    """Run the curve; 0 on success, 1 on a learner error (message on stderr), 2 on bad arguments."""
    problem = _validate(args)
    if problem:
        print(f"juicer curve: {problem}", file=sys.stderr)
        return 2
    try:
        return _run(args, settings)
    except LearnerError as exc:
        print(f"juicer curve: {exc}", file=sys.stderr)
        return 1


def _forecast(result: Any, labels: Any, args: argparse.Namespace) -> dict[str, Any] | None:
    """The forecast on budgets up to 10%, checked against 20%, 50% and 100% (None if a budget is missing)."""
    from learner.curve import curve_forecast, holdout_split

    n_holdout = len(holdout_split(labels, args.holdout, 0)[1])  # the same size for every seed
    try:
        return curve_forecast(result, n_holdout, max_multiple=args.forecast_max_multiple)
    except ValueError as exc:
        logger.warning("no forecast: %s", exc)
        return None


def _run(args: argparse.Namespace, settings: Settings) -> int:
    started = time.perf_counter()
    from learner.augment import augment
    from learner.backbones import load_backbone, resolve_backbone
    from learner.cache import EmbeddingCache, embed_sources
    from learner.curve import run_curve
    from learner.head import SoftmaxHead
    from learner.plots import plot_curve
    from learner.semi import SemiSupervisedHead

    out_dir = args.out or settings.data_dir / "curve"
    progress = not args.no_progress
    dataset = _load_dataset(args, settings)
    print(dataset.describe())

    backbone_name = args.backbone or settings.learner.backbone
    input_size = args.input_size if args.input_size is not None else settings.learner.input_size
    spec = resolve_backbone(backbone_name, settings.data_dir, input_size=input_size)
    backbone = load_backbone(spec, batch_size=settings.learner.batch_size,
                             mixed_precision=settings.learner.mixed_precision)
    print(f"backbone: {spec.name} ({spec.input_size[0]}x{spec.input_size[1]}, {backbone.dim} features) "
          f"on {backbone.device}")

    embed_started = time.perf_counter()
    with EmbeddingCache(settings.data_dir / "embeddings", backbone.id) as cache:
        embeddings = embed_sources(backbone, cache, dataset.sources, progress=progress)
        augmented = None
        if args.augment:
            # Every image can be a training image for some seed (holdouts differ per seed), so every image
            # gets its copies; run_curve only ever trains on the copies of picked training images.
            copies = [copy for source in dataset.sources for copy in augment(source, args.augment, seed=0)]
            print(f"augmentation: {args.augment} copies of each of {len(dataset)} images ({len(copies)} to embed)")
            augmented = embed_sources(backbone, cache, copies, progress=progress)
            augmented = augmented.reshape(len(dataset), args.augment, backbone.dim)
    embed_s = time.perf_counter() - embed_started

    seeds = list(range(args.seeds))
    from learner.curve import DEFAULT_BUDGETS

    semi = args.head == "semi"
    wanted = args.budgets.split(",") if getattr(args, "budgets", None) else None
    budgets = [b for b in DEFAULT_BUDGETS if wanted is None or b.name in wanted]
    n_fits = len(seeds) * len(budgets) * (2 if semi else 1)
    common = dict(
        seeds=seeds, budgets=budgets, holdout_fraction=args.holdout, augmented=augmented,
        dataset=args.dataset if args.dataset == FASHION_MNIST else str(Path(args.dataset).resolve()),
        backbone=spec.name, class_names=dataset.class_names,
    )
    with tqdm(total=n_fits, unit="fit", desc="training heads", disable=not progress) as bar:
        supervised = run_curve(embeddings, dataset.labels, lambda seed: SoftmaxHead(random_state=seed),
                               progress=bar.update, **common)
        result = supervised
        if semi:
            # The same seeds give the same holdouts and picks: the two heads are compared on identical labels.
            result = run_curve(embeddings, dataset.labels, lambda seed: SemiSupervisedHead(random_state=seed),
                               progress=bar.update, unlabelled_pool=True, **common)
            result.timing["train_s"] += supervised.timing["train_s"]
            result.timing["train_cpu_s"] += supervised.timing["train_cpu_s"]
            result.timing["curve_s"] += supervised.timing["curve_s"]

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    result.timing = {
        "embed_s": round(embed_s, 3),
        "train_s": round(result.timing["train_s"], 3),
        "train_cpu_s": round(result.timing["train_cpu_s"], 3),
        "curve_s": round(result.timing["curve_s"], 3),
        "total_s": 0.0,
    }
    document = result.to_dict()
    document["forecast"] = _forecast(result, dataset.labels, args)
    document["backbone_id"] = backbone.id
    if semi:
        document["supervised"] = {"head": supervised.head, "budgets": [b.to_dict() for b in supervised.budgets]}
    document["device"] = backbone.device
    (out_dir / "curve.csv").write_text(result.to_csv())
    plot_curve(document, out_dir / "curve.png")
    document["timing"]["total_s"] = round(time.perf_counter() - started, 3)
    (out_dir / "curve.json").write_text(json.dumps(document, indent=2) + "\n")

    print()
    baseline = {b.budget: b.accuracy_mean for b in supervised.budgets} if semi else None
    if semi:
        print(f"{result.head.get('class')} (mean/min/max) against the plain SoftmaxHead on the same picks (baseline)")
    print(result.table(baseline))
    if document["forecast"] is not None:
        from learner.curve import forecast_table

        print()
        print(forecast_table(document["forecast"]))
    timing = document["timing"]
    print(f"\n{n_fits} head fits in {timing['train_s']:.1f} s; embedding "
          f"{timing['embed_s']:.1f} s; total {timing['total_s']:.1f} s")
    print(f"wrote {out_dir / 'curve.json'}, {out_dir / 'curve.csv'}, {out_dir / 'curve.png'}")
    return 0
