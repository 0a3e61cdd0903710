"""juicer as Label Studio's ML backend: the protocol Label Studio 1.23.2 speaks, under ``/label-studio-ml``.

In any Label Studio project (Settings > Model > Connect model) paste ``http://<juicer>/label-studio-ml``; with
juicer's API token set, choose "Basic auth" with any user name and the token as the password. Label Studio then
calls (see ``label_studio/ml/api_connector.py``)::

    GET  /health, GET /   {"status": "UP", "model_class": "juicer"}                       (1 s timeout)
    POST /setup           {"model_version": <serving version>}, or a 422 naming the labelling-config problem (3 s)
    POST /predict         {"results": [{"result": [...], "score": p, "model_version": v}, ...]} in task order (100 s)
    POST /webhook         START_TRAINING queues a retrain job and answers at once; ANNOTATION_* are recorded and
                          become labels through the same job as juicer's own webhook
    GET  /versions        {"versions": [every model version, oldest first]}

Any project, not only juicer's own: the labelling config comes with each request (one Image, one Choices; the
names are the project's, :func:`annotation.labelconfig.parse_label_config`), and its choices must be juicer
classes. Images come from the task: Label Studio's own files (the configured Label Studio, with the access token
from ``/setup`` or juicer's), http(s) URLs of ``label_studio.image_hosts`` only (:mod:`annotation.task_images`),
data URIs, or juicer's own item (``item_id`` in the task data, believed in juicer's own project only). Each task
becomes a juicer item (split ``served``) linked to its Label Studio task, so the annotation that later arrives
becomes a label.

The holdout: a project juicer did not create is remembered at ``/setup``, and juicer's delivery job creates its
holdout tasks there, blind (:mod:`app.core.holdout`); ``/predict`` answers no prediction for those tasks, and
``/health`` says where the holdout goes, or why juicer cannot create tasks in that project and what to do.

Authentication: every call Label Studio makes for the connection carries its Basic auth, except annotation
events: Label Studio sends those through a plain webhook it creates for the backend (``<url>/webhook``, no
credentials). juicer records such an event, and the label job reads each named annotation back from the
configured Label Studio before it counts, finding its item by the task juicer linked when it predicted it
(:mod:`app.core.intake`), never by the body; ``START_TRAINING`` without credentials is a 401. The webhook is small
and bounded like juicer's own (:mod:`app.http.webhook_door`: body limit, per-address rate, pending cap, a 400 per
malformed field). The token check, the body reader and the retrain queue are the ones ``/v1`` uses
(:mod:`app.http.auth`, :mod:`app.http.jsonbody`, :mod:`app.http.context`).

Failures reach Label Studio as problem bodies; for ``/setup`` the detail is also the HTTP reason phrase, because
Label Studio shows ``str(HTTPError)`` (status and reason, not the body) in its connection dialog.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np
from flask import Blueprint, Response, jsonify, request
from pydantic import BaseModel, ConfigDict, Field

from app.http.auth import token_refusal
from app.http.context import queue_retrain, services
from app.http.jsonbody import json_object
from app.core.classes import HOW_TO_ADD
from app.core.holdout import holdout_status, remember_connected_project
from app.core.uploads import items_for_uploads  # the one upload-to-item resolution
from app.core.serving import prediction_record
from app.http.openapi import ML_AUTH, AnyObject, Answers, spec, validated
from app.http.problems import BASIC_CHALLENGE, Problem, unauthorized
from app.http.webhook_door import EventFields, admit, record_event
from app.services import Services
from app.store import NewItem, NewPrediction
from app.core.uploads import Upload, check_upload
from app.http.uploads import decode_base64
from learner.errors import ImageError

logger = logging.getLogger(__name__)

ml_backend = Blueprint("ml_backend", __name__, url_prefix="/label-studio-ml")

MODEL_CLASS = "juicer"
ANNOTATION_EVENTS = ("ANNOTATION_CREATED", "ANNOTATION_UPDATED", "ANNOTATION_DELETED", "ANNOTATIONS_DELETED")
DECISION = "label-studio"  # predictions asked for by Label Studio: annotators decide, juicer queues nothing


def _authenticated() -> bool:
    """Whether the request carries juicer's API token: Basic auth's password or a Bearer token (or auth is off)."""
    return token_refusal(basic=True) is None


def _unauthorized() -> Problem:
    return unauthorized(
        "juicer's API is token-protected: connect with Basic auth, any user name, and service.api_token as the password",
        BASIC_CHALLENGE,
    )


@ml_backend.before_request
def _require_token() -> None:
    """Label Studio's "Basic auth": any user name, juicer's API token as the password (a Bearer token works too).

    Except ``/webhook``: Label Studio sends annotation events through a plain webhook that carries no
    credentials; that view records them (every event is checked against Label Studio later, :mod:`app.core.intake`).
    """
    if request.endpoint == "ml_backend.webhook" or _authenticated():
        return
    raise _unauthorized()


@ml_backend.errorhandler(Problem)
def _problem(exc: Problem) -> Response:
    """A problem body whose reason phrase is the detail: what Label Studio shows of a failed call."""
    response = exc.to_response(request.path)
    reason = " ".join(str(exc.detail or exc.title).split())[:300].encode("latin-1", "replace").decode("latin-1")
    response.status = f"{exc.status} {reason}"
    return response


# -- the bodies: documented in /openapi.json and checked by the views with the same models (validated) --------
class _LabelStudioBody(BaseModel):
    model_config = ConfigDict(extra="allow")

    project: str | int | None = None


class SetupBody(_LabelStudioBody):
    """A project connecting: its labelling config (``schema``) and an access token for its images."""

    label_config: str | None = Field(None, alias="schema")
    access_token: str | None = None


class PredictBody(_LabelStudioBody):
    """Tasks to predict, with the project's labelling config."""

    tasks: list[dict[str, Any]]
    label_config: str | None = None


class EventBody(EventFields):
    """``START_TRAINING`` or an annotation event (``ANNOTATION_CREATED`` ...)."""


def _documented(json: type[BaseModel] | None = None, ok: tuple[int, ...] = (200,), problems: tuple[int, ...] = ()) -> Any:
    answers = Answers(**{f"HTTP_{status}": AnyObject for status in ok}, problems=(401, *problems))
    return spec.validate(json=json, resp=answers, security=ML_AUTH, skip_validation=True)


# -- the request's project ----------------------------------------------------------------------------
@dataclass(frozen=True)
class _Project:
    id: str
    config: Any  # annotation.labelconfig.ChoicesConfig


def _project(body: Mapping[str, Any], config_key: str) -> _Project:
    """The project id ("<id>.<created>") and its labelling config, checked against juicer's classes."""
    from annotation.errors import ProjectConfigError
    from annotation.labelconfig import parse_label_config

    project_id = str(body.get("project") or "").split(".", 1)[0]
    try:
        config = parse_label_config(body.get(config_key))
    except ProjectConfigError as exc:
        raise Problem(422, "Labelling config not usable", str(exc), type="label-config") from exc
    classes = services().classes
    unknown = [choice for choice in config.choices if choice not in classes]
    if unknown:
        raise Problem(
            422, "Unknown choices",
            f"the labelling config's choices {unknown} are not juicer classes ({', '.join(classes)}); rename them to "
            f"juicer's class names, or {HOW_TO_ADD.replace('add it', 'add each')}",
            type="unknown-choices", unknown=unknown, classes=list(classes),
        )  # fmt: skip
    return _Project(project_id, config)


def _serving_version() -> str | None:
    model = services().models.current
    return model.version if model is not None else None


# -- health, setup, versions --------------------------------------------------------------------------
@ml_backend.get("/")
@ml_backend.get("/health")
@_documented()
def health() -> Response:
    """Label Studio's health check; ``holdout`` says where the holdout tasks of a connected project go (or why not)."""
    body = {"status": "UP", "model_class": MODEL_CLASS, "model_version": _serving_version()}
    status = holdout_status(services().store)
    if status is not None:
        body["holdout"] = status
    return jsonify(body)


@ml_backend.post("/setup")
@_documented(SetupBody, problems=(400, 413, 415, 422, 503))
def setup() -> Response:
    """Check the project's labelling config and answer the serving version; keep the access token for images."""
    body = json_object("Label Studio sends a JSON object")
    validated(SetupBody, body)
    project = _project(body, "schema")
    svc = services()
    token = body.get("access_token")
    if isinstance(token, str) and token and project.id:
        svc.ml_backend_tokens[project.id] = token
    if project.id.isdigit() and (svc.project is None or int(project.id) != svc.project.id):
        remember_connected_project(svc.store, project.id, project.config.image_key)  # its holdout tasks: app.core.holdout
    logger.info("Label Studio project %s set up: choices %s", project.id, list(project.config.choices))
    return jsonify({"model_version": _serving_version()})


@ml_backend.get("/versions")
@_documented()
def versions() -> Response:
    """Every model version, oldest first."""
    return jsonify({"versions": [row.version for row in services().store.list_models()], "model_version": _serving_version()})


# -- predict ------------------------------------------------------------------------------------------
def _label_studio_url(svc: Services) -> str:
    if svc.desk is not None and getattr(svc.desk, "url", None):
        return str(svc.desk.url)
    ls = svc.settings.label_studio
    return ls.url or f"http://127.0.0.1:{ls.port}"


def _task_images(svc: Services, project_id: str) -> Any:
    from annotation.task_images import TaskImages

    ls = svc.settings.label_studio
    token = svc.ml_backend_tokens.get(project_id) or ls.token
    return TaskImages(
        _label_studio_url(svc), token, allowed_hosts=ls.image_hosts, allow_private_hosts=ls.image_hosts_private,
        max_bytes=svc.settings.service.max_request_bytes, timeout_s=ls.timeout_s,
        transport=svc.task_images_transport,  # tests hand in an httpx.MockTransport
    )  # fmt: skip


def _read_images(
    svc: Services, project: _Project, tasks: list[Any], skip: set[int]
) -> tuple[dict[int, Any], dict[int, str], dict[int, str]]:
    """Per task index (but those in ``skip``): an image source (an :class:`Upload` or a stored item's file) or why
    there is none; and the item id of the tasks that show one of juicer's own items."""
    from annotation.errors import TaskImageError

    max_pixels = svc.settings.learner.max_image_pixels
    sources: dict[int, Any] = {}
    errors: dict[int, str] = {}
    own_items: dict[int, str] = {}
    to_fetch: list[tuple[int, str]] = []
    for index, task in enumerate(tasks):
        if index in skip:
            continue
        data = task.get("data") if isinstance(task, Mapping) else None
        if not isinstance(data, Mapping):
            errors[index] = "the task has no data"
            continue
        # The task data's item_id is believed in juicer's own project only: in any other, a member could name a
        # juicer item there and have its annotation become that item's label (the task is linked below).
        item_id = data.get("item_id") if svc.project is not None and project.id == str(svc.project.id) else None
        item = svc.store.get_item(str(item_id)) if item_id is not None else None
        if item is not None and item.image_path:
            sources[index] = svc.trainer.source_for(item.id, item.content_hash, item.source, item.image_path)
            own_items[index] = item.id
            continue
        value = data.get(project.config.image_key)
        if not isinstance(value, str) or not value:
            errors[index] = f"the task data has no {project.config.image_key!r} (the Image's value)"
        elif value.startswith("data:"):
            try:
                sources[index] = check_upload(decode_base64(value, f"task {task.get('id')}"), f"task {task.get('id')}", max_pixels)
            except (Problem, ImageError) as exc:
                errors[index] = str(exc)
        else:
            to_fetch.append((index, value))
    if to_fetch:
        with _task_images(svc, project.id) as images:
            fetched = images.fetch_many([url for _, url in to_fetch])
        for (index, url), data in zip(to_fetch, fetched):
            if isinstance(data, TaskImageError):
                errors[index] = data.message
                continue
            try:
                sources[index] = check_upload(data, url, max_pixels)
            except ImageError as exc:
                errors[index] = str(exc)
    return sources, errors, own_items


def _embed(svc: Services, sources: dict[int, Any], errors: dict[int, str]) -> dict[int, np.ndarray]:
    """Embeddings per task index, in one batched call; an undecodable image costs only its own task."""
    indices = list(sources)
    try:
        X = svc.embeddings.embed([sources[i].image if isinstance(sources[i], Upload) else sources[i] for i in indices])
        return dict(zip(indices, X))
    except ImageError:
        pass  # find the bad ones: the good ones are memoised by now, so this costs the decode of each once
    vectors = {}
    for index in indices:
        source = sources[index]
        try:
            vectors[index] = svc.embeddings.embed([source.image if isinstance(source, Upload) else source])[0]
        except ImageError as exc:
            errors[index] = str(exc)
    return vectors


def _blind_tasks(svc: Services, project: _Project, tasks: list[Any]) -> set[int]:
    """Indices of the tasks juicer created in this project for its holdout (linked to a holdout item): no prediction."""
    ids = {index: int(task["id"]) for index, task in enumerate(tasks)
           if isinstance(task, Mapping) and isinstance(task.get("id"), int)}  # fmt: skip
    if not ids or not project.id:
        return set()
    linked = svc.store.served_task_items(project.id, list(ids.values()))
    splits = svc.store.item_splits(set(linked.values()))
    return {index for index, task_id in ids.items() if splits.get(linked.get(task_id, "")) == "holdout"}


@ml_backend.post("/predict")
@_documented(PredictBody, problems=(400, 413, 415, 422, 503))
def predict() -> Response:
    """Predictions for Label Studio's tasks, in task order; each stamped with the serving version and its score."""
    svc = services()
    body = json_object("Label Studio sends a JSON object")
    validated(PredictBody, body)  # 'tasks' a list of objects: a 400 naming the field otherwise
    project = _project(body, "label_config")
    tasks = body["tasks"]
    model = svc.models.current
    if model is None:
        raise Problem(
            503, "No model yet", "juicer has no trained model yet: label a few tasks of each class and press Start training",
            type="no-model", headers={"Retry-After": "30"},
        )  # fmt: skip
    started = time.perf_counter()
    blind = _blind_tasks(svc, project, tasks)
    sources, errors, own_items = _read_images(svc, project, tasks, blind)
    read_s = time.perf_counter() - started
    vectors = _embed(svc, sources, errors)
    embed_s = time.perf_counter() - started - read_s
    columns = [model.classes.index(choice) for choice in project.config.choices]
    order = sorted(vectors)
    proba = model.proba(np.stack([vectors[i] for i in order])) if order else np.zeros((0, len(model.classes)))
    new_items: dict[str, NewItem] = {}
    uploaded = [i for i in order if isinstance(sources[i], Upload)]
    resolved = items_for_uploads(svc.store, svc.data_dir, [sources[i] for i in uploaded], "served", new_items)
    item_of = {**own_items, **{index: item_id for index, (item_id, _) in zip(uploaded, resolved)}}
    records: list[NewPrediction] = []
    links: dict[int, str] = {}
    answers: dict[int, dict[str, Any]] = {}
    for index, row in zip(order, proba):
        task = tasks[index]
        # Only the project's choices are offered: the probabilities renormalised over them (others 0).
        offered = np.zeros_like(row)
        offered[columns] = row[columns]
        total = float(offered.sum())
        offered[columns] = offered[columns] / total if total > 0 else 1.0 / len(columns)
        record = prediction_record(
            model, item_of[index], offered, decision=DECISION, rule="ml-backend",
            reason=f"asked by Label Studio project {project.id}, task {task.get('id')}",
        )  # fmt: skip
        records.append(record)
        answers[index] = {"result": project.config.result(record.label), "score": record.score, "model_version": model.version}
        if task.get("id") is not None and project.id:
            links[int(task["id"])] = item_of[index]
    svc.store.record_predictions(records, list(new_items.values()))
    svc.store.link_served_tasks(project.id, links)
    timings = {"read_images": round(read_s, 3), "embed": round(embed_s, 3), "total": round(time.perf_counter() - started, 3)}
    logger.info("Label Studio project %s: %d predictions for %d tasks (%s s)", project.id, len(answers), len(tasks), timings)
    for index, reason in sorted(errors.items()):
        logger.warning("Label Studio project %s, task %s: no prediction (%s)", project.id, tasks[index].get("id"), reason)
    # A task juicer could not read gets an empty list (no prediction; "Retrieve predictions" may ask again); so does
    # a holdout task juicer created here: a guess would anchor the annotator.
    results = [answers.get(index, []) for index in range(len(tasks))]
    failed = [{"task": tasks[index].get("id"), "detail": reason} for index, reason in sorted(errors.items())]
    return jsonify({"results": results, "model_version": model.version, "errors": failed, "timings": timings})


# -- webhook ------------------------------------------------------------------------------------------
@ml_backend.post("/webhook")
@_documented(EventBody, ok=(200, 201), problems=(400, 413, 415, 429, 503))
def webhook() -> tuple[Response, int]:
    """START_TRAINING queues a retrain and answers at once; annotation events are recorded for the label job.

    The retrain is queued as ``POST /v1/retrain`` queues it: in any worker, the one holding the scheduler lease runs it.
    """
    svc = services()
    trusted = _authenticated()
    admit(svc, trusted)
    payload = json_object("Label Studio sends a JSON object")
    validated(EventBody, payload)  # an id that is not an integer: a 400 naming the field
    action = payload.get("action")
    if action == "START_TRAINING":
        if not trusted:  # Label Studio's "Start training" comes with the connection's credentials
            raise _unauthorized()
        job_id = queue_retrain(svc)
        logger.info("Label Studio asked for training: retrain job %s queued", job_id)
        return jsonify({"status": "ok", "job_id": job_id, "model_version": _serving_version()}), 201
    if action not in ANNOTATION_EVENTS:
        return jsonify({"status": "ignored", "action": action}), 200
    return jsonify({"status": "ok", "recorded": record_event(svc, payload, trusted)}), 200

