"""``juicer embed PATH...``: embed a folder (or a list of paths / URLs) into the cache and register its items.

    juicer embed ~/photos                                  in this process (what juicer import does)
    juicer embed ~/photos --engine ray --actors 2          a local Ray cluster, two backbones side by side
    juicer embed ~/photos --engine ray --address HOST:PORT an existing cluster (the paths readable on every node)

The same door as ``juicer import`` (unlabelled pool items, resumable by content hash), with the embedding pass
on Ray Data when asked (:mod:`app.core.embed_job`; ``pip install juicer[ray]``): killed and run again, it embeds
only what no shard and no cache holds. URLs in a list are fetched and embedded in this process.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path
from typing import Any

from config import Settings

NAME = "embed"
HELP = "embed images into the cache and register them as pool items, in this process or on a Ray cluster"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Paths, the engine and its knobs."""
    parser.add_argument("paths", nargs="+", metavar="PATH", help="image files, folders, or .txt lists of paths / http(s) URLs")
    parser.add_argument("--engine", choices=("local", "ray"), default="local",
                        help="local: in this process (default); ray: a Ray Data job")  # fmt: skip
    parser.add_argument("--address", help="ray: the address of a running cluster (default: start a local one)")
    parser.add_argument("--actors", type=int, default=None, help="ray: backbones side by side (default 1; one GPU each where Ray sees GPUs)")
    parser.add_argument("--batch-size", type=int, default=None, help="images per backbone call (default learner.batch_size)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def run(args: argparse.Namespace, settings: Settings) -> int:
    """Embed and register; print the summary. 2 for a refused argument, a missing extra or a foreign shard."""
    from app.cli.commands.importing import import_paths
    from app.core.datadir import prepare_data_dir
    from learner.errors import BackboneError, EmbeddingJobError

    if args.engine == "local" and (args.address or args.actors):
        print("juicer embed: --address and --actors are for --engine ray", file=sys.stderr)
        return 2
    if args.actors is not None and args.actors < 1 or args.batch_size is not None and args.batch_size < 1:
        print("juicer embed: --actors and --batch-size must be at least 1", file=sys.stderr)
        return 2
    if args.batch_size:
        settings = settings.model_copy(update={"learner": settings.learner.model_copy(update={"batch_size": args.batch_size})})
    prepare_data_dir(settings)
    progress = not args.no_progress
    try:
        if args.engine == "local":
            summary = import_paths(settings, args.paths, progress=progress)
        else:
            if importlib.util.find_spec("ray") is None or importlib.util.find_spec("pyarrow") is None:
                print("juicer embed: --engine ray needs Ray: pip install 'juicer[ray]'", file=sys.stderr)
                return 2
            summary = _on_ray(args, settings, progress)
    except (BackboneError, EmbeddingJobError) as exc:
        print(f"juicer embed: {exc}", file=sys.stderr)
        return 2
    if summary is None:
        return 2
    for line in summary.lines():
        print(line)
    return 0


def _on_ray(args: argparse.Namespace, settings: Settings, progress: bool) -> Any:
    """The Ray job, the merge, then the import's registration with every vector found in the cache: the
    :class:`app.core.imports.ImportSummary`, or None when a shard was refused."""
    from app.cli.commands.importing import import_paths
    from app.core.embed_job import CacheFirstBackbone, ShardError, embed_on_ray
    from learner.backbones import resolve_backbone
    from learner.cache import EmbeddingCache, embed_sources, embedding_cache_dir

    data_dir = Path(settings.data_dir)
    learner = settings.learner
    spec = resolve_backbone(learner.backbone, data_dir, learner.input_size)
    cache = EmbeddingCache(embedding_cache_dir(data_dir), spec.id)
    try:
        report = embed_on_ray(
            spec, cache, args.paths, data_dir=data_dir, max_pixels=learner.max_image_pixels,
            max_bytes=settings.service.max_request_bytes, actors=args.actors or 1, batch_size=learner.batch_size,
            address=args.address, progress=progress,
        )  # fmt: skip
    except ShardError as exc:
        print(f"juicer embed: {exc}", file=sys.stderr)
        return None
    for line in report.lines():
        print(line)
    backbone = CacheFirstBackbone(spec, cache, learner.batch_size)
    return import_paths(settings, args.paths, progress=progress,
                        embedder=lambda sources: embed_sources(backbone, cache, sources, progress=False))  # fmt: skip
