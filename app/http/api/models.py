"""``/v1/models``: the model versions and the serving one; ``/v1/report`` and ``/v1/forecast``: accuracy
against labels, and what more labels buy."""

from __future__ import annotations

from typing import Any

from flask import Response, jsonify
from pydantic import BaseModel, ConfigDict, Field

from app.http.api.common import api, forecast, serving_model, services
from app.http.records import model_json
from app.http.openapi import AnyObject, Answers, spec


class ModelVersion(BaseModel):
    """A model version: what it was trained on and how it scores on the holdout."""

    model_config = ConfigDict(extra="allow")

    model_version: str
    created: str | None = None
    backbone: str | None = None
    classes: list[str]
    n_labels: int
    holdout_accuracy: float | None = None
    serving: bool


class ModelVersions(BaseModel):
    """Every model version, oldest first, and the serving one."""

    models: list[ModelVersion]
    current: str | None


class ReportPoints(BaseModel):
    """One point per model version: accuracy against the number of labels (and the review batch split after it);
    ``label_checks``: the newest label check (suspects, holdout suspects, annotators' agreement and quality)."""

    points: list[dict[str, Any]]
    label_checks: dict[str, Any] | None = None


class ForecastQuery(BaseModel):
    """An accuracy to reach, added to the configured targets."""

    target: float | None = Field(None, gt=0, lt=1, description="an accuracy to reach (0-1): the labels it needs")


@api.get("/models")
@spec.validate(resp=Answers(HTTP_200=ModelVersions, problems=(401,)))
def list_models() -> Response:
    """Every model version, oldest first."""
    svc = services()
    current = svc.models.current.version if svc.models.current else None
    return jsonify({"models": [model_json(row, current) for row in svc.store.list_models()], "current": current})


@api.get("/models/current")
@spec.validate(resp=Answers(HTTP_200=ModelVersion, problems=(401, 503)))
def current_model() -> Response:
    """The version serving now."""
    svc = services()
    model = serving_model()
    row = svc.store.get_model(model.version)
    return jsonify(model_json(row, model.version))


@api.get("/report")
@spec.validate(resp=Answers(HTTP_200=ReportPoints, problems=(401,)))
def report_json() -> Response:
    """Accuracy against labels: one point per model version."""
    from app.core.checks import SPLITS_KEY
    from app.http.reports import label_checks_view, report_points

    store = services().store
    points = report_points(store.list_models(), services().settings.service.holdout.min_labels, store.get_meta(SPLITS_KEY))
    return jsonify({"points": points, "label_checks": label_checks_view(store)})


@api.get("/forecast")
@spec.validate(resp=Answers(HTTP_200=AnyObject, problems=(401,)))
def forecast_json(query: ForecastQuery) -> Response:
    """The learning-curve forecast over the model versions; ``?target=0.9`` adds a target to the configured ones."""
    from app.http.reports import report_points

    return jsonify(forecast(report_points(services().store.list_models(), services().settings.service.holdout.min_labels), query.target))
