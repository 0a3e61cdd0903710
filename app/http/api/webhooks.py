"""``POST /v1/webhooks/label-studio``: Label Studio's webhook, recorded at once; a job turns it into labels.

The shared secret (``X-Juicer-Secret``) is an anti-noise filter, not the proof of anything: Label Studio shows it to
every project member in its webhook list. What it still guards: a caller without it (anyone else who can reach
juicer) cannot add rows to the event table through this door, nor make the label job read Label Studio. What an
event says is never believed: the label job reads each annotation back from Label Studio with juicer's own token
(:mod:`app.core.intake`). The door is small and bounded like the ML backend's (:mod:`app.http.webhook_door`).
"""

from __future__ import annotations

from flask import Response, jsonify, request

from app.http.api.common import api, services
from app.http.jsonbody import json_object
from app.http.openapi import WEBHOOK_AUTH, Answers, spec, validated
from app.http.problems import Problem
from app.http.webhook_door import EventFields, admit, record_event
from pydantic import BaseModel


class LabelStudioEvent(EventFields):
    """A Label Studio webhook body (``action``, ``project``, ``task``, ``annotation``...), kept as sent."""


class Recorded(BaseModel):
    """The id of the recorded event."""

    recorded: int


# The body is checked in the view, after the secret: a caller without it learns nothing about the body's shape.
@api.post("/webhooks/label-studio")
@spec.validate(json=LabelStudioEvent, resp=Answers(HTTP_200=Recorded, problems=(400, 401, 413, 415, 429, 503)),
               security=WEBHOOK_AUTH, skip_validation=True)  # fmt: skip
def label_studio_webhook() -> Response:
    """Check the rate, the shared secret and the body, record the event, answer at once; a job turns it into labels."""
    from annotation.webhooks import SECRET_HEADER, check_secret

    svc = services()
    admit(svc, trusted=False)
    if not check_secret(request.headers, svc.webhook_secret):
        raise Problem(
            401, "Bad webhook secret", f"the {SECRET_HEADER} header is missing or wrong", type="bad-webhook-secret",
            headers={"WWW-Authenticate": f'{SECRET_HEADER} realm="juicer"'},
        )  # fmt: skip
    payload = json_object("a Label Studio webhook body is a JSON object")
    validated(LabelStudioEvent, payload)  # not an object, or an id that is not an integer: a 400 problem naming it
    return jsonify({"recorded": record_event(svc, payload, trusted=False)})
