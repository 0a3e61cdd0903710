"""The HTTP endpoints. Views parse, call the services, and answer JSON; errors are raised as problems.

The token, the origin of browser writes and the JSON depth are checked before any view runs
(:mod:`app.http.auth`); the Label Studio webhook is checked by its shared secret here instead.
"""

from __future__ import annotations

import logging
import math
from typing import Any

from flask import Blueprint, Response, current_app, jsonify, request, url_for

from app.http.context import queue_retrain, services
from app.http.jsonbody import json_object
from app.http.problems import Problem
from app.http.records import model_json, to_json
from app.services import Services
from app.core.serving import prediction_record
from app.store import NewItem, NewLabel, StoreError
from app.http.uploads import Upload, check_pixel_budget, items_for_uploads, read_uploads

logger = logging.getLogger(__name__)

MAX_ID = 2**63 - 1  # the largest integer key the store's databases hold

api = Blueprint("api", __name__, url_prefix="/v1")
web = Blueprint("web", __name__)



def _serving_model() -> Any:
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


def _check_label(label: Any, where: str) -> str:
    classes = services().classes
    if not isinstance(label, str) or not label:
        raise Problem(400, "Missing label", f"{where}: 'label' must be a class name", type="missing-field", field="label")
    if label not in classes:
        raise Problem(
            422,
            "Unknown label",
            f"{where}: {label!r} is not one of the classes: {', '.join(classes)}",
            type="unknown-label",
            label=label,
            classes=list(classes),
        )
    return label


def _request_uploads(svc: Services) -> list[Upload]:
    """The request's images within the upload limits (count, pixels per image, pixels per request)."""
    limits = svc.settings.service
    return read_uploads(
        request, max_images=limits.max_images_per_request, max_pixels=svc.settings.learner.max_image_pixels,
        max_request_pixels=limits.max_request_pixels,
    )  # fmt: skip


# -- predictions ------------------------------------------------------------------------------------
@api.post("/predict")
def predict() -> Response:
    """Predict one or many images; images decided ``review`` are queued for annotators in the same transaction."""
    from learner.rules import decide

    from app.core.training import decision_params

    svc = services()
    limits = svc.settings.service
    uploads = _request_uploads(svc)
    model = _serving_model()
    X = svc.embeddings.embed([upload.image for upload in uploads])  # decodes; a bad image raises ImageError (4xx)
    proba = model.proba(X)
    decisions = decide(proba, limits.decision_rule, **decision_params(limits, model))
    new_items: dict[str, NewItem] = {}
    item_ids = [item_id for item_id, _ in items_for_uploads(svc.store, svc.data_dir, uploads, "served", new_items)]
    records = [
        prediction_record(model, item_id, row, decision=decision.decision, rule=decision.rule, reason=decision.reason)
        for item_id, row, decision in zip(item_ids, proba, decisions)
    ]
    results = [
        {"item_id": record.item_id, "label": record.label, "score": record.score, "probabilities": record.probabilities,
         "decision": record.decision, "rule": record.rule, "reason": record.reason, "model_version": record.model_version}
        for record in records
    ]
    svc.store.record_predictions(records, list(new_items.values()))
    metrics = current_app.extensions.get("juicer_metrics")
    if metrics is not None:
        metrics.observe_predictions(record.decision for record in records)
    if any(record.review for record in records):
        svc.wake("deliver-outbox")
    return jsonify({"model_version": model.version, "predictions": results})


# -- items ------------------------------------------------------------------------------------------
@api.post("/items")
def add_items() -> tuple[Response, int]:
    """Add unlabelled images to the pool; the query strategy decides which ones annotators see."""
    svc = services()
    limits = svc.settings.service
    uploads = _request_uploads(svc)
    # Decode and embed now: a truncated file is refused here instead of breaking every later re-scoring.
    svc.embeddings.embed([upload.image for upload in uploads])
    new_items: dict[str, NewItem] = {}
    answer = [{"item_id": item_id, "created": created} for item_id, created in items_for_uploads(svc.store, svc.data_dir, uploads, "pool", new_items)]
    svc.store.add_items(list(new_items.values()))
    if new_items:
        svc.wake("refresh-queue")
    return jsonify({"items": answer}), 201


@api.get("/items")
def list_items() -> Response:
    """Items, newest first: ``?split=seed|pool|holdout|served&limit=&offset=``; ``?conflicts=true``: the items
    whose annotators disagree, each with all its active labels (the newest one trains); ``?quarantined=true``:
    the items set aside because their image is missing or unreadable."""
    from app.store import SPLITS

    split = request.args.get("split")
    conflicts = request.args.get("conflicts", "false").lower()
    if conflicts not in ("true", "false", "1", "0"):
        raise Problem(400, "Bad parameter", "conflicts must be true or false", type="bad-parameter", parameter="conflicts")
    if request.args.get("quarantined", "false").lower() in ("true", "1"):
        limit = _int_arg("limit", 100, 1, 1000)
        offset = _int_arg("offset", 0, 0, 10**9)
        rows = services().store.quarantined(limit=limit, offset=offset)
        return jsonify({"items": to_json(rows), "limit": limit, "offset": offset})
    if conflicts in ("true", "1"):
        limit = _int_arg("limit", 100, 1, 1000)
        offset = _int_arg("offset", 0, 0, 10**9)
        rows = services().store.conflicts(limit=limit, offset=offset)
        return jsonify({"items": to_json(rows), "limit": limit, "offset": offset})
    if split is not None and split not in SPLITS:
        raise Problem(400, "Bad split", f"split must be one of {', '.join(SPLITS)}", type="bad-parameter", parameter="split")
    limit = _int_arg("limit", 100, 1, 1000)
    offset = _int_arg("offset", 0, 0, 10**9)
    svc = services()
    rows = svc.store.list_items(split=split, limit=limit, offset=offset)
    return jsonify({"items": to_json(rows), "counts": svc.store.count_items(), "limit": limit, "offset": offset})


@api.get("/items/<path:item_id>")
def get_item(item_id: str) -> Response:
    """One item with its current label, latest prediction and review status."""
    item = services().store.get_item(item_id)
    if item is None:
        raise Problem(404, "Unknown item", f"no item {item_id!r}", type="unknown-item", item_id=item_id)
    return jsonify(to_json(item))


def _int_arg(name: str, default: int, low: int, high: int) -> int:
    raw = request.args.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise Problem(400, "Bad parameter", f"{name} must be an integer, not {raw!r}", type="bad-parameter", parameter=name) from None
    if not low <= value <= high:
        raise Problem(400, "Bad parameter", f"{name} must be between {low} and {high}", type="bad-parameter", parameter=name)
    return value


# -- labels -----------------------------------------------------------------------------------------
@api.post("/labels")
def add_labels() -> tuple[Response, int]:
    """Add labels: for known items (JSON ``{"labels": [{"item_id", "label"}]}``) or with new images (seed labels)."""
    svc = services()
    limits = svc.settings.service
    new_items: dict[str, NewItem] = {}
    new_labels: list[NewLabel] = []
    if request.mimetype == "multipart/form-data":
        uploads = _request_uploads(svc)
        given = request.form.getlist("label")
        if not given:
            raise Problem(400, "Missing label", "send a 'label' form field (one, or one per file)", type="missing-field", field="label")
        if len(given) not in (1, len(uploads)):
            raise Problem(400, "Labels do not match files", f"{len(given)} labels for {len(uploads)} files", type="bad-request")
        pairs = [(upload, given[0] if len(given) == 1 else given[i]) for i, upload in enumerate(uploads)]
        annotator = request.form.get("annotator")
        _labels_for_uploads(svc, pairs, annotator, new_items, new_labels)
    else:
        body = json_object()
        entries = body.get("labels", [body] if "label" in body else None)
        if not isinstance(entries, list) or not entries:
            raise Problem(
                400, "Missing labels", "send {\"labels\": [{\"item_id\": ..., \"label\": ...}]}", type="missing-field", field="labels"
            )
        if len(entries) > 10_000:
            raise Problem(413, "Too many labels", "at most 10000 labels per request", type="too-many-labels")
        image_entries = []
        for index, entry in enumerate(entries):
            where = f"labels[{index}]"
            if not isinstance(entry, dict):
                raise Problem(400, "Bad label", f"{where} must be an object", type="bad-request")
            label = _check_label(entry.get("label"), where)
            annotator = entry.get("annotator")
            if "image" in entry:
                image_entries.append((index, entry, label))
            elif isinstance(entry.get("item_id"), str) and entry["item_id"]:
                new_labels.append(NewLabel(entry["item_id"], label, "api", str(annotator) if annotator else None))
            else:
                raise Problem(
                    400, "Missing item", f"{where} needs 'item_id' (a known item) or 'image' (base64)", type="missing-field", field="item_id"
                )
        if image_entries:
            if len(image_entries) > limits.max_images_per_request:
                raise Problem(413, "Too many images", f"at most {limits.max_images_per_request} images per request", type="too-many-images")
            uploads = _uploads_from_entries(image_entries, svc.settings.learner.max_image_pixels)
            check_pixel_budget(uploads, limits.max_request_pixels)
            pairs = [(upload, label) for upload, (_, _, label) in zip(uploads, image_entries)]
            _labels_for_uploads(svc, pairs, None, new_items, new_labels)
    _check_label_targets(svc, new_labels, new_items)  # the whole body is valid before anything is written
    if new_items:
        svc.store.add_items(list(new_items.values()))
    try:
        ids = svc.store.add_labels(new_labels)
    except StoreError as exc:
        raise Problem(404, "Unknown item", str(exc), type="unknown-item") from exc
    svc.wake("retrain-check")
    return (
        jsonify(
            {
                "labels": [{"label_id": i, "item_id": label.item_id, "label": label.label} for i, label in zip(ids, new_labels)],
                "new_labels_since_model": svc.trainer.new_labels(),
                "retrain_after_labels": limits.retrain_after_labels,
            }
        ),
        201,
    )


def _check_label_targets(svc: Services, new_labels: list[NewLabel], new_items: dict[str, NewItem]) -> None:
    """404 for a label naming an unknown item, 409 for a holdout item (it scores models; it takes no labels)."""
    splits = svc.store.item_splits(label.item_id for label in new_labels if label.item_id not in new_items)
    missing = sorted({label.item_id for label in new_labels if label.item_id not in new_items and label.item_id not in splits})
    if missing:
        shown = ", ".join(missing[:5]) + (" ..." if len(missing) > 5 else "")
        raise Problem(404, "Unknown item", f"unknown item id(s): {shown}; nothing was stored", type="unknown-item", item_ids=missing[:100])
    holdout = sorted(item_id for item_id, split in splits.items() if split == "holdout")
    if holdout:
        raise Problem(
            409, "Holdout item", f"{', '.join(holdout[:5])} belong to the holdout, which takes no new labels; nothing was stored",
            type="holdout-item", item_ids=holdout[:100],
        )  # fmt: skip


def _uploads_from_entries(image_entries: list[tuple[int, dict[str, Any], str]], max_pixels: int) -> list[Any]:
    from app.http.uploads import check_upload, decode_base64

    return [
        check_upload(decode_base64(entry["image"], f"labels[{index}].image"), str(entry.get("filename") or f"labels[{index}]"), max_pixels)
        for index, entry, _ in image_entries
    ]


def _labels_for_uploads(svc: Services, pairs: list[tuple[Any, Any]], annotator: str | None, new_items: dict, new_labels: list) -> None:
    for upload, label in pairs:
        _check_label(label, upload.image.source)
    # Decode every image before anything is stored: a truncated file fails the whole request.
    svc.embeddings.embed([upload.image for upload, _ in pairs])
    item_ids = items_for_uploads(svc.store, svc.data_dir, [upload for upload, _ in pairs], "seed", new_items)
    for (item_id, _), (_, label) in zip(item_ids, pairs):
        new_labels.append(NewLabel(item_id, label, "api", annotator))


# -- review tasks -----------------------------------------------------------------------------------
@api.post("/reviews/retry")
def retry_reviews() -> Response:
    """Put every review task that gave up (``failed``) back in the outbox."""
    svc = services()
    requeued = svc.store.retry_failed_reviews()
    if requeued:
        svc.wake("deliver-outbox")
    return jsonify({"requeued": requeued})


# -- Label Studio webhook ---------------------------------------------------------------------------
@api.post("/webhooks/label-studio")
def label_studio_webhook() -> Response:
    """Check the shared secret, record the event, answer at once; a job turns it into labels."""
    from annotation.webhooks import SECRET_HEADER, check_secret

    svc = services()
    if not check_secret(request.headers, svc.webhook_secret):
        raise Problem(
            401, "Bad webhook secret", f"the {SECRET_HEADER} header is missing or wrong", type="bad-webhook-secret",
            headers={"WWW-Authenticate": f'{SECRET_HEADER} realm="juicer"'},
        )  # fmt: skip
    payload = json_object("a Label Studio webhook body is a JSON object")
    event_id = svc.store.record_event(payload)
    svc.wake("process-webhooks")
    return jsonify({"recorded": event_id})


# -- retraining and models --------------------------------------------------------------------------
@api.post("/retrain")
def retrain() -> tuple[Response, int, dict[str, str]]:
    """Queue a retrain; 202 with the job id and where to poll it.

    ``{"force": true}`` (or ``?force=true``) retrains even when no label changed since the serving model;
    otherwise such a job finishes at once with ``result.skipped`` saying so.
    """
    svc = services()
    force = _retrain_force(request)  # a bad request is a 4xx whatever state the service is in
    job_id = queue_retrain(svc, force=force)
    location = url_for("api.get_job", job_id=job_id)
    return jsonify({"job_id": job_id, "status": "queued", "status_url": location}), 202, {"Location": location}


def _retrain_force(req: Any) -> bool:
    """The ``force`` flag of a retrain request, from the query string or a JSON body; anything else is a 400."""
    raw: Any = req.args.get("force")
    if raw is None and req.content_length:
        body = req.get_json(silent=True)
        if not isinstance(body, dict):
            raise Problem(400, "Bad request body", 'send no body, or a JSON object like {"force": true}', type="bad-body")
        raw = body.get("force", False)
    if raw is None or isinstance(raw, bool):
        return bool(raw)
    if str(raw).lower() in ("true", "1", "yes"):
        return True
    if str(raw).lower() in ("false", "0", "no"):
        return False
    raise Problem(400, "Bad force flag", f"force must be true or false, not {raw!r}", type="bad-field", field="force")


@api.get("/jobs/<int:job_id>")
def get_job(job_id: int) -> Response:
    """A background job's status (queued, running, done, failed) and result."""
    job = services().store.get_job(job_id) if job_id <= MAX_ID else None  # past 64 bits no row can match
    if job is None:
        raise Problem(404, "Unknown job", f"no job {job_id}", type="unknown-job")
    return jsonify(to_json(job))


@api.get("/models")
def list_models() -> Response:
    """Every model version, oldest first."""
    svc = services()
    current = svc.models.current.version if svc.models.current else None
    return jsonify({"models": [model_json(row, current) for row in svc.store.list_models()], "current": current})


@api.get("/models/current")
def current_model() -> Response:
    """The version serving now."""
    svc = services()
    model = _serving_model()
    row = svc.store.get_model(model.version)
    return jsonify(model_json(row, model.version))


# -- reports ----------------------------------------------------------------------------------------
@api.get("/report")
def report_json() -> Response:
    """Accuracy against labels: one point per model version."""
    from app.http.reports import report_points

    return jsonify({"points": report_points(services().store.list_models())})


def _forecast(points: list[dict[str, Any]], extra_target: float | None = None) -> dict[str, Any]:
    from app.http.reports import forecast_document

    limits = services().settings.service
    targets = sorted({*limits.forecast_targets, *([extra_target] if extra_target is not None else [])})
    return forecast_document(points, targets=targets, max_multiple=limits.forecast_max_multiple,
                             backtest_tolerance=limits.forecast_backtest_tolerance)


@api.get("/forecast")
def forecast_json() -> Response:
    """The learning-curve forecast over the model versions; ``?target=0.9`` adds a target to the configured ones."""
    from app.http.reports import report_points

    raw = request.args.get("target")
    target = None
    if raw is not None:
        try:
            target = float(raw)
        except ValueError:
            target = math.nan
        if not 0 < target < 1:
            raise Problem(400, "Bad target", f"target must be an accuracy between 0 and 1, not {raw!r}",
                          type="bad-parameter", parameter="target")
    return jsonify(_forecast(report_points(services().store.list_models()), target))


@web.get("/report")
def report_page() -> Response:
    """The report page: the forecast in words, the plot, the serving model's per-class figures, the tables."""
    from app.http.reports import report_html, report_points

    svc = services()
    points = report_points(svc.store.list_models())
    serving = svc.store.get_model(svc.models.current.version) if svc.models.current else None
    return Response(report_html(points, forecast=_forecast(points), serving=serving), mimetype="text/html")


@web.get("/report.png")
def report_plot() -> Response:
    """The report's plot (points with 95% intervals, the forecast with its band)."""
    from app.http.reports import report_png, report_points

    points = report_points(services().store.list_models())
    return Response(report_png(points, forecast=_forecast(points)), mimetype="image/png")


# -- the gallery ------------------------------------------------------------------------------------
def _gallery() -> Any:
    """The gallery of the current versions, rebuilt only when a version was added (heads load once per set)."""
    from app.http.gallery import build_gallery

    svc = services()
    rows = svc.store.list_models()
    size = svc.settings.service.gallery_size
    key = (tuple(row.version for row in rows), size)
    cached = svc.gallery
    if cached is not None and cached[0] == key:
        return cached[1]
    gallery = build_gallery(rows, svc.store.current_labels(holdout=True), svc.embeddings.cache, svc.data_dir, size,
                            backbone_id=svc.embeddings.backbone_id)
    svc.gallery = (key, gallery)
    return gallery


@web.get("/gallery")
def gallery_page() -> Response:
    """Holdout thumbnails captioned by a model version's guesses (``?version=``, default the serving one)."""
    from app.http.gallery import gallery_html

    svc = services()
    version = request.args.get("version") or (svc.models.current.version if svc.models.current else None)
    return Response(gallery_html(_gallery(), version), mimetype="text/html")


@web.get("/gallery.gif")
def gallery_animation() -> Response:
    """The gallery as one animated GIF, a frame per model version."""
    from app.http.gallery import gallery_gif

    return Response(gallery_gif(_gallery()), mimetype="image/gif")


# -- health -----------------------------------------------------------------------------------------
@web.get("/openapi.json")
def openapi_json() -> Response:
    """The OpenAPI 3.1 description of every route (:mod:`app.http.openapi`)."""
    from app.http.openapi import openapi_document

    return jsonify(openapi_document())


@web.get("/healthz")
def healthz() -> Response:
    """The process answers."""
    return jsonify({"status": "ok"})


@web.get("/readyz")
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
