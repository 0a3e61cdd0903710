"""``POST /v1/predict``: predictions for one or many images; those decided ``review`` go to the annotators."""

from __future__ import annotations

import logging
from concurrent.futures import Future

from flask import Response, after_this_request, current_app, jsonify
from pydantic import BaseModel

from app.core.serving import prediction_record
from app.http.api.common import api, request_uploads, serving_model, services
from app.http.openapi import Answers, spec
from app.core.uploads import beside, items_for_uploads
from app.http.uploads import ImageFiles, ImagesBody
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

    The answer leaves once the images' files and the store's rows are written, so a returned prediction queued for
    review is durable; the new vectors reach the embedding cache once the answer is sent (derived data:
    ``Embeddings.write_behind``).
    """
    from learner.rules import decide

    from app.core.training import decision_params

    svc = services()
    limits = svc.settings.service
    uploads = request_uploads(svc, json)
    model = serving_model()
    # Every image is decoded before anything is written (a bad one is an ImageError, a 4xx); then the new images'
    # files are written (fsync) on an I/O thread while the backbone runs: disk waits and CPU work overlap. The
    # writes start once the embedding cache was looked up (embed_held), not before: the I/O thread's Python
    # work would hold the interpreter lock while the lookup waits for it.
    sources = svc.embeddings.decode_new([upload.image for upload in uploads])
    new_items: dict[str, NewItem] = {}
    writes: list[Future] = []

    def start_writes() -> None:
        writes.append(beside(items_for_uploads, svc.store, svc.data_dir, uploads, "served", new_items))

    X, held = svc.embeddings.embed_held(sources, before_backbone=start_writes)
    stored = writes[0]
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

    @after_this_request
    def write_behind(response: Response) -> Response:  # the final response (spectree builds its own from ours)
        response.call_on_close(lambda: svc.embeddings.write_behind(held))  # once the answer is sent
        return response

    return jsonify({"model_version": model.version, "predictions": results})
