"""The demo `juicer serve` seeds: Fashion-MNIST split into K labelled images per class (default 1), a pool and a holdout.

Images are written as PNG files ``images/<sha256>.png`` under ``<data_dir>/files/`` (Label Studio serves them
from there) and recorded with their Fashion-MNIST item ids (``fashion-mnist/train/00123``), so a simulator can
look up the ground truth of any pool item in the dataset itself.
"""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from PIL import Image

from app.core.datadir import write_image
from app.store import NewItem, NewLabel, Store
from learner.sampling import quotas, stratified_split

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DemoCounts:
    """How many items each split got."""

    seed: int
    pool: int
    holdout: int


def encode_png(array: np.ndarray) -> bytes:
    """A uint8 grey (h, w) or RGB (h, w, 3) array as PNG bytes."""
    buffer = io.BytesIO()
    Image.fromarray(np.asarray(array, dtype=np.uint8)).save(buffer, format="PNG", optimize=False)
    return buffer.getvalue()


def split_indices(
    labels: np.ndarray, n_classes: int, n_pool: int, n_holdout: int, seed: int, seed_per_class: int = 1
) -> tuple[list[int], list[int], list[int]]:
    """Seeded, class-stratified row numbers: ``seed_per_class`` per class labelled, then ``n_holdout`` and ``n_pool`` more."""
    seed_rows, rest = stratified_split(labels, seed_per_class, seed)
    holdout, rest = stratified_split(labels, quotas(n_holdout, n_classes), seed + 1, rows=rest)
    pool, _ = stratified_split(labels, quotas(n_pool, n_classes), seed + 2, rows=rest)
    return seed_rows.tolist(), pool.tolist(), holdout.tolist()


def seed_demo(
    store: Store, data_dir: Path, dataset: Any, n_pool: int, n_holdout: int, seed: int = 0, progress: bool = False,
    seed_per_class: int = 1,
) -> DemoCounts:
    """Record the demo items and labels (seed and holdout labelled, the pool not) from ``dataset``.

    ``seed_per_class`` 0 starts with no training label: the first pool items annotators see are then the
    query strategy's cold-start picks.

    ``dataset`` is a :class:`learner.datasets.Dataset` whose sources hold arrays (``ArrayImage``).
    """
    from learner.images import content_hash

    from tqdm import tqdm

    labels = np.asarray(dataset.labels)
    seed_rows, pool_rows, holdout_rows = split_indices(
        labels, len(dataset.class_names), n_pool, n_holdout, seed, seed_per_class)
    new_items: list[NewItem] = []
    new_labels: list[NewLabel] = []
    plan: Sequence[tuple[str, list[int]]] = (("seed", seed_rows), ("holdout", holdout_rows), ("pool", pool_rows))
    total = sum(len(rows) for _, rows in plan)
    with tqdm(total=total, unit="img", desc="writing demo images", disable=not progress) as bar:
        for split, rows in plan:
            for row in rows:
                data = encode_png(dataset.sources[row].array)
                digest = content_hash(data)
                item_id = dataset.item_ids[row]
                new_items.append(NewItem(item_id, digest, item_id, split, write_image(data_dir, digest, "png", data)))
                if split != "pool":
                    source = "seed" if split == "seed" else "dataset"
                    new_labels.append(NewLabel(item_id, dataset.class_names[labels[row]], source, annotator=source))
                bar.update(1)
    store.add_items(new_items)
    store.add_labels(new_labels)
    logger.info("demo seeded: %d seed, %d pool, %d holdout", len(seed_rows), len(pool_rows), len(holdout_rows))
    return DemoCounts(len(seed_rows), len(pool_rows), len(holdout_rows))
