"""Retention: served images nobody labelled or queued, and their predictions, deleted after ``keep_served_days``;
processed webhook events after ``keep_events_days``."""

from __future__ import annotations

import logging
from datetime import timedelta
from pathlib import Path

from app.core.datadir import image_file
from app.store import Store, utcnow

logger = logging.getLogger(__name__)


def apply_retention(store: Store, data_dir: Path, keep_served_days: float | None) -> int:
    """Delete served images and predictions older than ``keep_served_days`` (None: keep all); items removed.

    Kept whatever the age: items with a label (they train), items whose review is open, every item's newest
    prediction. Rows go first, files after, so a crash between the two leaves an unreferenced file, never a
    row naming a missing one.
    """
    if keep_served_days is None:
        return 0
    paths = store.forget_served(utcnow() - timedelta(days=keep_served_days))
    for relative in paths:
        image_file(data_dir, relative).unlink(missing_ok=True)
    if paths:
        logger.info("retention: %d served images older than %g days removed", len(paths), keep_served_days)
    return len(paths)


def forget_events(store: Store, keep_events_days: float) -> int:
    """Delete webhook events processed more than ``keep_events_days`` ago (used, failed or dropped); how many."""
    removed = store.forget_events(utcnow() - timedelta(days=keep_events_days))
    if removed:
        logger.info("retention: %d processed webhook events older than %g days removed", removed, keep_events_days)
    return removed
