"""``juicer import PATH...``: image files, folders (recursively) or lists of paths / URLs into the pool, in bulk.

    juicer import ~/photos                       unlabelled pool items, embedded through the cache
    juicer import ~/labelled --labelled          <class>/<image>: labelled training items (label source "import")
    juicer import ~/labelled --holdout           <class>/<image>: a labelled holdout
    juicer import urls.txt                       one path or http(s) URL a line (URLs from label_studio.image_hosts)

Killed at any point and run again, it imports exactly the rest (:mod:`app.core.imports`). A running service sees
the new items at its next queue refresh (``service.refresh_interval_s``): they are rows in the shared store.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Callable, Sequence

from config import Settings

NAME = "import"
HELP = "import images (files, folders, lists of paths or URLs) into the pool, or labelled <class>/<image> folders"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Paths, the labelled layouts, and embedding."""
    parser.add_argument("paths", nargs="+", metavar="PATH", help="image files, folders, or .txt lists of paths / http(s) URLs")
    kind = parser.add_mutually_exclusive_group()
    kind.add_argument("--labelled", action="store_true", help="folders laid out <class>/<image>: labelled training items")
    kind.add_argument("--holdout", action="store_true", help="folders laid out <class>/<image>: a labelled holdout")
    parser.add_argument("--no-embed", action="store_true", help="only check and register; the service embeds later")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def import_paths(
    settings: Settings, paths: Sequence[str], *, labelled: bool = False, holdout: bool = False, embed: bool = True,
    progress: bool = True, store: Any = None, embedder: Callable[[Sequence[Any]], object] | None = None,
) -> Any:  # fmt: skip
    """Import ``paths`` into the store of ``settings``; returns the :class:`app.core.imports.ImportSummary`.

    Shared by ``juicer import``, ``juicer embed`` (which hands its own ``embedder``) and ``juicer serve --images``. Classes of a labelled import come from
    ``service.classes`` (or the store's list); with neither, the folder names become the class list.
    """
    from tqdm import tqdm

    from annotation.task_images import TaskImages
    from app.core.imports import import_images, walk
    from app.store import Store

    data_dir = Path(settings.data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    own_store = store is None
    store = store if store is not None else Store.from_settings(settings)
    classes = list(settings.service.classes or store.get_meta("classes") or []) or None
    ls = settings.label_studio
    fetcher = TaskImages(
        ls.url or f"http://127.0.0.1:{ls.port}", "", allowed_hosts=ls.image_hosts, allow_private_hosts=ls.image_hosts_private,
        max_bytes=settings.service.max_request_bytes, timeout_s=ls.timeout_s,
    )  # fmt: skip
    embedder = embedder or (_embedder(settings) if embed else None)
    split = "holdout" if holdout else "seed" if labelled else "pool"
    try:
        with tqdm(unit="img", desc="importing", disable=not progress) as bar:
            candidates = walk(paths, labelled=labelled or holdout, max_bytes=settings.service.max_request_bytes,
                              fetch=fetcher.fetch)  # fmt: skip
            summary = import_images(
                candidates, store=store, data_dir=data_dir, max_pixels=settings.learner.max_image_pixels, embed=embedder,
                split=split, classes=classes, on_done=bar.update,
            )  # fmt: skip
        if (labelled or holdout) and classes is None and len(summary.labels) >= 2:
            store.set_meta("classes", sorted(summary.labels))
    finally:
        fetcher.close()
        if own_store:
            store.close()
    return summary


def _embedder(settings: Settings) -> Callable[[Sequence[Any]], object]:
    """Embed through the persistent cache with the configured backbone (the one the service uses)."""
    from learner.backbones import load_backbone, resolve_backbone
    from learner.cache import EmbeddingCache, embed_sources, embedding_cache_dir

    spec = resolve_backbone(settings.learner.backbone, Path(settings.data_dir), settings.learner.input_size)
    backbone = load_backbone(spec, settings.learner.batch_size, settings.learner.mixed_precision)
    cache = EmbeddingCache(embedding_cache_dir(Path(settings.data_dir)), backbone.id)
    return lambda sources: embed_sources(backbone, cache, sources, progress=False)


def run(args: argparse.Namespace, settings: Settings) -> int:
    """Import, print the summary (one line per file skipped); 0 once the import ran, whatever it skipped."""
    from app.core.datadir import prepare_data_dir
    from learner.errors import BackboneError

    prepare_data_dir(settings)
    try:
        summary = import_paths(settings, args.paths, labelled=args.labelled, holdout=args.holdout, embed=not args.no_embed,
                               progress=not args.no_progress)  # fmt: skip
    except BackboneError as exc:
        print(f"juicer import: {exc}", file=sys.stderr)
        return 2
    for line in summary.lines():
        print(line)
    return 0
