"""``POST /v1/predict``: predictions for one or many images; those decided ``review`` go to the annotators."""

from __future__ import annotations

import logging

from flask import Response, current_app, jsonify
from pydantic import BaseModel

from app.core.datadir import image_file
from app.core.serving import Beside, prediction_record
from app.http.api.common import api, request_uploads, serving_model, services
from app.http.openapi import Answers, spec
from app.core.uploads import items_for_uploads
from app.http.uploads import ImageFiles, ImagesBody
from app.services import Services
from app.store import NewItem

logger = logging.getLogger(__name__)


class Prediction(BaseModel):
    """One image's prediction and what was decided for it."""

    item_id: str
    label: str
    score: float | None = None
    probabilities: dict[str, float]
    decision: str
    rule: str
    reason: str | None = None
    model_version: str


class Predictions(BaseModel):
    """The serving version and a prediction per image, in request order."""

    model_version: str
    predictions: list[Prediction]


@api.post("/predict")
@spec.validate(resp=Answers(HTTP_200=Predictions, problems=(401, 403, 413, 415, 422, 503)))
def predict(json: ImagesBody, form: ImageFiles) -> Response:
    """Predict one or many images; images decided ``review`` are queued for annotators in the same transaction.

    The images' files are written (and fsynced) on another thread while the backbone runs; the answer leaves
    once they are and the store has committed, so a returned prediction queued for review is durable. The new
    vectors reach the embedding cache behind the answer (derived data: see ``Embeddings.embed_behind``).
    """
    from learner.rules import decide

    from app.core.training import decision_params

    svc = services()
    limits = svc.settings.service
    uploads = request_uploads(svc, json)
    model = serving_model()
    new_items: dict[str, NewItem] = {}
    stored = Beside(items_for_uploads, svc.store, svc.data_dir, uploads, "served", new_items)
    try:
        X = svc.embeddings.embed_behind([upload.image for upload in uploads])  # decodes; ImageError is a 4xx
    except BaseException:
        _discard_images(svc, stored, new_items)
        raise
    proba = model.proba(X)
    decisions = decide(proba, limits.decision_rule, **decision_params(limits, model))
    item_ids = [item_id for item_id, _ in stored.result()]
    records = [
        prediction_record(model, item_id, row, decision=decision.decision, rule=decision.rule, reason=decision.reason)
        for item_id, row, decision in zip(item_ids, proba, decisions)
    ]
    svc.store.record_predictions(records, list(new_items.values()))
    results = [
        {"item_id": record.item_id, "label": record.label, "score": record.score, "probabilities": record.probabilities,
         "decision": record.decision, "rule": record.rule, "reason": record.reason, "model_version": record.model_version}
        for record in records
    ]  # fmt: skip
    metrics = current_app.extensions.get("juicer_metrics")
    if metrics is not None:
        metrics.observe_predictions(record.decision for record in records)
    if any(record.review for record in records):
        svc.wake("deliver-outbox")
    return jsonify({"model_version": model.version, "predictions": results})


def _discard_images(svc: Services, stored: Beside, new_items: dict[str, NewItem]) -> None:
    """The request failed before its rows: remove the image files it wrote that no item row names.

    (A decoding failure is the usual cause; the same bytes fail the same way everywhere, so no other request
    can be about to commit a row for such a file.)
    """
    try:
        stored.result()
    except Exception:  # noqa: BLE001 - the first failure is the one the caller raises
        logger.exception("storing the images of a failed prediction request failed too")
    if not new_items:
        return
    known = svc.store.item_ids_by_hash([item.content_hash for item in new_items.values()])
    for item in new_items.values():
        if item.image_path and item.content_hash not in known:
            image_file(svc.data_dir, item.image_path).unlink(missing_ok=True)
