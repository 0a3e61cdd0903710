"""The store's records as JSON: the one place the HTTP API turns them into response bodies.

A record becomes an object of its fields (nested records and tuples too), timestamps as ISO 8601 strings;
free-form JSON fields (a job's result, a prediction's probabilities) pass through as they are.
"""

from __future__ import annotations

import dataclasses
from datetime import datetime
from typing import Any

from app.store import ModelVersion


def to_json(record: Any) -> Any:
    """A record (or a list of them, or a plain value) as JSON-ready values."""
    if dataclasses.is_dataclass(record) and not isinstance(record, type):
        return {field.name: to_json(getattr(record, field.name)) for field in dataclasses.fields(record)}
    if isinstance(record, dict):
        return {key: to_json(value) for key, value in record.items()}
    if isinstance(record, (list, tuple)):
        return [to_json(value) for value in record]
    if isinstance(record, datetime):
        return record.isoformat()
    return record


def model_json(model: ModelVersion, current_version: str | None) -> dict[str, Any]:
    """A model version as ``/v1/models`` shows it: its figures, holdout accuracy, and whether it serves now."""
    metrics = model.metrics or {}
    return {
        "model_version": model.version,
        "created": to_json(model.created_at),
        "backbone": model.backbone_id,
        "classes": model.classes,
        "n_labels": model.n_labels,
        "labels_per_class": model.labels_per_class,
        "holdout_accuracy": metrics.get("accuracy"),
        "holdout": metrics or None,
        "train_seconds": model.train_seconds,
        "serving": model.version == current_version,
    }
