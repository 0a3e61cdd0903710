"""The routes outside ``/v1``: the report and gallery pages (HTML, PNG, GIF), health, readiness and
``/openapi.json``. The report and the gallery show a user's images and results, so they need the API token (a
browser asks for it: any user name, the token as the password); health, readiness and ``/openapi.json`` carry no
user data and are open (``service.public_paths``, checked in :mod:`app.http.auth`)."""

from __future__ import annotations

from typing import Any, Literal

from flask import Blueprint, Response, current_app, jsonify, request
from pydantic import BaseModel, Field

from app.http.api.common import forecast, services
from app.http.openapi import OPEN, READ_AUTH, AnyObject, Answers, openapi_document, spec
from app.http.problems import Problem
from app.services import Services

web = Blueprint("web", __name__)


class GalleryQuery(BaseModel):
    """Which model version captions the gallery."""

    version: str | None = Field(None, description="a model version (default: the serving one)")


class Health(BaseModel):
    """The process answers."""

    status: Literal["ok"]


class Readiness(BaseModel):
    """Ready (a model and the store), or degraded while Label Studio is away; each check's outcome."""

    status: Literal["ready", "degraded"]
    checks: dict[str, bool]
    model_version: str | None


# -- the report -------------------------------------------------------------------------------------
@web.get("/report")
@spec.validate(resp=Answers("HTTP_200", media="text/html", problems=(401,)), security=READ_AUTH)
def report_page() -> Response:
    """The report page: the forecast in words, the plot, the serving model's per-class figures, the tables."""
    from app.core.checks import SPLITS_KEY
    from app.core.holdout import holdout_status
    from app.http.reports import label_checks_view, report_html, report_points

    svc = services()
    points = report_points(svc.store.list_models(), svc.settings.service.holdout.min_labels, svc.store.get_meta(SPLITS_KEY))
    serving = svc.store.get_model(svc.models.current.version) if svc.models.current else None
    notes = [line for line in (holdout_status(svc.store),) if line]  # the holdout in a connected project
    return Response(report_html(points, forecast=forecast(points), serving=serving, notes=notes,
                                checks=label_checks_view(svc.store)), mimetype="text/html")


@web.get("/report.png")
@spec.validate(resp=Answers("HTTP_200", media="image/png", problems=(401,)), security=READ_AUTH)
def report_plot() -> Response:
    """The report's plot (points with 95% intervals, the forecast with its band)."""
    from app.http.reports import report_png, report_points

    points = report_points(services().store.list_models(), services().settings.service.holdout.min_labels)
    return Response(report_png(points, forecast=forecast(points)), mimetype="image/png")


# -- the gallery ------------------------------------------------------------------------------------
def _gallery() -> Any:
    """The gallery of the current versions, rebuilt only when a version was added (heads load once per set)."""
    from app.core.checks import holdout_labels
    from app.http.gallery import build_gallery

    svc = services()
    rows = svc.store.list_models()
    size = svc.settings.service.gallery_size
    key = (tuple(row.version for row in rows), size)
    cached = svc.gallery
    if cached is not None and cached[0] == key:
        return cached[1]
    # Each holdout image under the label the measure reads (its majority answer), not its newest answer.
    gallery = build_gallery(rows, holdout_labels(svc.store), svc.embeddings.cache, svc.data_dir, size,
                            backbone_id=svc.embeddings.backbone_id)  # fmt: skip
    svc.gallery = (key, gallery)
    return gallery


@web.get("/gallery")
@spec.validate(resp=Answers("HTTP_200", media="text/html", problems=(401, 404)), security=READ_AUTH)
def gallery_page(query: GalleryQuery) -> Response:
    """Holdout thumbnails captioned by a model version's guesses (``?version=``, default the serving one)."""
    from app.http.gallery import gallery_html

    svc = services()
    version = query.version or (svc.models.current.version if svc.models.current else None)
    return Response(gallery_html(_gallery(), version), mimetype="text/html")


@web.get("/gallery.gif")
@spec.validate(resp=Answers("HTTP_200", media="image/gif", problems=(401, 404)), security=READ_AUTH)
def gallery_animation() -> Response:
    """The gallery as one animated GIF, a frame per model version."""
    from app.http.gallery import gallery_gif

    return Response(gallery_gif(_gallery()), mimetype="image/gif")


# -- health and this API's description ----------------------------------------------------------------
@web.get("/openapi.json")
@spec.validate(resp=Answers(HTTP_200=AnyObject), security=OPEN)
def openapi_json() -> Response:
    """The OpenAPI 3.1 description of every route, generated from the routes (:mod:`app.http.openapi`)."""
    return jsonify(openapi_document(current_app))


@web.get("/healthz")
@spec.validate(resp=Answers(HTTP_200=Health), security=OPEN)
def healthz() -> Response:
    """The process answers."""
    return jsonify({"status": "ok"})


@web.get("/readyz")
@spec.validate(resp=Answers(HTTP_200=Readiness, problems=(503,)), security=OPEN)
def readyz() -> tuple[Response, int]:
    """Ready when a model is loaded and the store answers; Label Studio down makes it ``degraded``, not unready.

    Predictions do not need Label Studio: while it is away review tasks wait in the outbox and labels in it wait
    for the next pull, so a load balancer keeps sending predictions here.
    """
    svc = services()
    model = svc.models.current
    checks = {
        "model": model is not None,
        "store": svc.store.ping(),
        "label_studio": _label_studio_up(svc),
    }
    ready = checks["model"] and checks["store"]
    status = "ready" if all(checks.values()) else "degraded" if ready else "not ready"
    body = {"status": status, "checks": checks, "model_version": model.version if model else None}
    if ready:
        return jsonify(body), 200
    failing = ", ".join(name for name, ok in checks.items() if not ok)
    problem = Problem(503, "Not ready", f"failing checks: {failing}", type="not-ready", checks=checks)
    return problem.to_response(request.path), 503


def _label_studio_up(svc: Services) -> bool:
    return svc.desk is not None and svc.project is not None and svc.desk.health()
