"""``POST /v1/retrain`` queues a retrain job; ``GET /v1/jobs/<id>`` polls it."""

from __future__ import annotations

from typing import Any

from flask import Response, jsonify, url_for
from pydantic import BaseModel, ConfigDict, Field

from app.http.api.common import MAX_ID, api, services
from app.http.context import queue_retrain
from app.http.records import to_json
from app.http.openapi import Answers, spec
from app.http.problems import Problem


class RetrainQuery(BaseModel):
    """``?force=true`` as in the body."""

    force: bool | None = Field(None, description="retrain even when no label changed since the serving model")


class RetrainBody(BaseModel):
    """No body, or ``{"force": true}``."""

    model_config = ConfigDict(extra="allow")

    force: bool = Field(False, description="retrain even when no label changed since the serving model")


class RetrainQueued(BaseModel):
    """The queued job and where to poll it."""

    job_id: int
    status: str
    status_url: str


class Job(BaseModel):
    """A background job: its kind, status (queued, running, done, failed) and result."""

    model_config = ConfigDict(extra="allow")

    id: int
    kind: str
    status: str
    result: Any = None


@api.post("/retrain")
@spec.validate(resp=Answers(HTTP_202=RetrainQueued, problems=(401, 403, 415, 503)))
def retrain(query: RetrainQuery, json: RetrainBody) -> tuple[Response, int, dict[str, str]]:
    """Queue a retrain; 202 with the job id and where to poll it.

    ``{"force": true}`` (or ``?force=true``) retrains even when no label changed since the serving model;
    otherwise such a job finishes at once with ``result.skipped`` saying so.
    """
    force = query.force if query.force is not None else json.force
    job_id = queue_retrain(services(), force=force)
    location = url_for("api.get_job", job_id=job_id)
    return jsonify({"job_id": job_id, "status": "queued", "status_url": location}), 202, {"Location": location}


@api.get("/jobs/<int:job_id>")
@spec.validate(resp=Answers(HTTP_200=Job, problems=(401, 404)))
def get_job(job_id: int) -> Response:
    """A background job's status (queued, running, done, failed) and result."""
    job = services().store.get_job(job_id) if job_id <= MAX_ID else None  # past 64 bits no row can match
    if job is None:
        raise Problem(404, "Unknown job", f"no job {job_id}", type="unknown-job")
    return jsonify(to_json(job))
