"""What the v1 routes share: their blueprint, the request's images, the serving model, the forecast.

The request's services come from :mod:`app.http.context` (shared with the ML backend); records become JSON in
:mod:`app.http.records`.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, request

from app.http.context import services

from app.http.problems import Problem
from app.core.uploads import Upload
from app.http.uploads import ImagesBody, read_uploads
from app.services import Services

MAX_ID = 2**63 - 1  # the largest integer key the store's databases hold

api = Blueprint("api", __name__, url_prefix="/v1")


def serving_model() -> Any:
    """The model serving now, or the 503 problem saying none was trained yet."""
    model = services().models.current
    if model is None:
        raise Problem(
            503,
            "No model yet",
            "no model has been trained yet: add labels of at least two classes (POST /v1/labels) and retrain",
            type="no-model",
            headers={"Retry-After": "30"},
        )
    return model


def request_uploads(svc: Services, body: ImagesBody | None) -> list[Upload]:
    """The request's images within the upload limits (count, pixels per image, pixels per request)."""
    limits = svc.settings.service
    return read_uploads(
        request, body, max_images=limits.max_images_per_request, max_pixels=svc.settings.learner.max_image_pixels,
        max_request_pixels=limits.max_request_pixels,
    )  # fmt: skip


def forecast(points: list[dict[str, Any]], extra_target: float | None = None) -> dict[str, Any]:
    """The learning-curve forecast over ``points`` for the configured targets (and ``extra_target``)."""
    from app.http.reports import forecast_document

    limits = services().settings.service
    targets = sorted({*limits.forecast_targets, *([extra_target] if extra_target is not None else [])})
    return forecast_document(points, targets=targets, max_multiple=limits.forecast_max_multiple,
                             backtest_tolerance=limits.forecast_backtest_tolerance)  # fmt: skip
