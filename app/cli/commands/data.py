"""``juicer data``: fetch the TF flowers archive and describe datasets.

    juicer data flowers [--url URL] [--dest DIR]     download + unpack into <data_dir>/datasets/flower_photos
    juicer data info fashion-mnist|PATH              classes and image counts
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from learner.datasets import download_flowers, load_dataset, load_folder
from learner.errors import DatasetError

NAME = "data"
HELP = "download the TF flowers dataset, or show a dataset's classes and counts"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``flowers`` and ``info`` subcommands."""
    sub = parser.add_subparsers(dest="data_command", required=True, metavar="ACTION")
    flowers = sub.add_parser("flowers", help="download and unpack the public TF flowers archive")
    flowers.add_argument("--url", help="archive URL (default: the flowers_url setting)")
    flowers.add_argument("--dest", type=Path, help="folder to unpack into (default: <data_dir>/datasets)")
    flowers.add_argument("--no-progress", action="store_true", help="no progress bar")
    info = sub.add_parser("info", help="show a dataset's classes and image counts")
    info.add_argument("dataset", help="'fashion-mnist' or a folder laid out as <class>/<image>")


def run(args: argparse.Namespace, settings) -> int:
    """Run ``juicer data flowers`` or ``juicer data info``."""
    try:
        if args.data_command == "flowers":
            dest = args.dest or Path(settings.data_dir) / "datasets"
            url = args.url or settings.flowers_url
            folder = download_flowers(url, dest, progress=not args.no_progress)
            print(f"flowers are in {folder}")
            print(load_folder(folder, name="flowers").describe())
            return 0
        dataset = load_dataset(
            args.dataset, fashion_mnist_dir=settings.fashion_mnist_dir, max_pixels=settings.learner.max_image_pixels
        )
        print(dataset.describe())
        return 0
    except DatasetError as exc:
        print(f"juicer data: {exc}", file=sys.stderr)
        return 1
