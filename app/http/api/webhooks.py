"""``POST /v1/webhooks/label-studio``: Label Studio's webhook, checked by its shared secret (not the API token),
recorded at once; a job turns it into labels."""

from __future__ import annotations

from flask import Response, jsonify, request
from pydantic import BaseModel, ConfigDict

from app.http.api.common import api, services
from app.http.jsonbody import json_object
from app.http.openapi import WEBHOOK_AUTH, Answers, spec, validated
from app.http.problems import Problem


class LabelStudioEvent(BaseModel):
    """A Label Studio webhook body (``action``, ``project``, ``task``, ``annotation``...), kept as sent."""

    model_config = ConfigDict(extra="allow")

    action: str | None = None


class Recorded(BaseModel):
    """The id of the recorded event."""

    recorded: int


# The body is checked in the view, after the secret: a caller without it learns nothing about the body's shape.
@api.post("/webhooks/label-studio")
@spec.validate(json=LabelStudioEvent, resp=Answers(HTTP_200=Recorded, problems=(401, 413, 415)), security=WEBHOOK_AUTH,
               skip_validation=True)  # fmt: skip
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
    validated(LabelStudioEvent, payload)  # not a JSON object (or not JSON at all): a 400 problem
    event_id = svc.store.record_event(payload)
    svc.wake("process-webhooks")
    return jsonify({"recorded": event_id})
