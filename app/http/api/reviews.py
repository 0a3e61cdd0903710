"""``POST /v1/reviews/retry``: the review tasks that gave up, back in the outbox."""

from __future__ import annotations

from flask import Response, jsonify
from pydantic import BaseModel

from app.http.api.common import api, services
from app.http.openapi import Answers, spec


class Requeued(BaseModel):
    """How many review tasks went back in the outbox."""

    requeued: int


@api.post("/reviews/retry")
@spec.validate(resp=Answers(HTTP_200=Requeued, problems=(401, 403)))
def retry_reviews() -> Response:
    """Put every review task that gave up (``failed``) back in the outbox."""
    svc = services()
    requeued = svc.store.retry_failed_reviews()
    if requeued:
        svc.wake("deliver-outbox")
    return jsonify({"requeued": requeued})
