"""``/v1/classes``: the class list, a class added at run time, and renaming or retiring one nobody used yet
(:mod:`app.core.classes`); a class in use is a 409 problem that says what to do instead."""

from __future__ import annotations

from flask import Response, jsonify
from pydantic import BaseModel, Field

from annotation.errors import AnnotationError
from app.core.classes import IN_USE_ADVICE, add_class, change_class, follow_classes
from app.http.api.common import api, services
from app.http.openapi import Answers, spec
from app.http.problems import Problem
from app.store import ClassInUseError, StoreError


class NewClass(BaseModel):
    """``{"name": "..."}``: the class to add (stripped; not empty, not one already there under another spelling)."""

    name: str = Field(..., min_length=1, max_length=200, description="the class name annotators will choose")


class LabelStudioState(BaseModel):
    """Whether juicer's Label Studio project holds the class list yet."""

    project_id: int | None = None
    updated: bool
    detail: str | None = None


class ClassList(BaseModel):
    """The classes in order, those added at run time, and (after a POST) the names it added."""

    classes: list[str]
    added_at_run_time: list[str]
    added: list[str] | None = None
    label_studio: LabelStudioState | None = None


@api.get("/classes")
@spec.validate(resp=Answers(HTTP_200=ClassList, problems=(401,)))
def list_classes() -> Response:
    """The class list (every process reads it from the store), and which classes were added at run time."""
    svc = services()
    return jsonify({"classes": list(svc.classes), "added_at_run_time": list(svc.store.added_classes())})


@api.post("/classes")
@spec.validate(resp=Answers(HTTP_200=ClassList, HTTP_201=ClassList, problems=(400, 401, 403, 409, 415, 422)))
def post_class(json: NewClass) -> tuple[Response, int]:
    """Add a class: 201 when it is new, 200 when it was there already (idempotent).

    It joins the store's list (every worker sees it), the Label Studio project's choices (``label_studio.updated``
    false while Label Studio is away: the delivery job appends it later), and the head at the first retrain with a
    label of it.
    """
    svc = services()
    try:
        result = add_class(svc.store, svc.desk, svc.settings.label_studio.project_title, json.name)
    except ValueError as exc:
        raise Problem(422, "Invalid class name", f"{json.name!r}: {exc}", type="invalid-class-name") from exc
    except StoreError as exc:
        raise Problem(409, "No class list", str(exc), type="no-classes") from exc
    if result.project is not None and svc.project is not None and svc.project.id == result.project.id:
        svc.project = result.project  # this process's delivery sees the grown choices at once
    label_studio = None
    if svc.desk is not None:
        label_studio = {
            "project_id": result.project.id if result.project is not None else None,
            "updated": result.project is not None,
            "detail": result.label_studio_error and f"Label Studio did not take it yet ({result.label_studio_error}); "
                                                     "the class is stored and its project gets it once it answers",
        }  # fmt: skip
    body = {"classes": list(result.classes), "added_at_run_time": list(svc.store.added_classes()),
            "added": list(result.added), "label_studio": label_studio}  # fmt: skip
    return jsonify(body), 201 if result.added else 200


class RenamedClass(BaseModel):
    """``{"name": "..."}``: the class's new name."""

    name: str = Field(..., min_length=1, max_length=200, description="the new name")


def _change(name: str, new_name: str | None) -> Response:
    svc = services()
    try:
        classes = change_class(svc.store, svc.desk, svc.settings.label_studio.project_title, name, new_name)
    except ValueError as exc:
        raise Problem(422, "Invalid class name", f"{new_name!r}: {exc}", type="invalid-class-name") from exc
    except ClassInUseError as exc:
        raise Problem(409, "Class in use", f"{exc}: {IN_USE_ADVICE}", type="class-in-use", name=name) from exc
    except StoreError as exc:
        raise Problem(404, "Unknown class", str(exc), type="unknown-class", name=name) from exc
    except AnnotationError as exc:
        raise Problem(503, "Label Studio unavailable", f"{exc}; nothing changed: try again when it answers",
                      type="label-studio-unavailable", headers={"Retry-After": "30"}) from exc  # fmt: skip
    if svc.project is not None:
        svc.project = follow_classes(svc.desk, svc.project, classes, svc.settings.label_studio.project_title)
    return jsonify({"classes": list(classes), "added_at_run_time": list(svc.store.added_classes())})


@api.patch("/classes/<path:name>")
@spec.validate(resp=Answers(HTTP_200=ClassList, problems=(400, 401, 403, 404, 409, 415, 422, 503)))
def rename_class(name: str, json: RenamedClass) -> Response:
    """Rename a class nobody used yet (added at run time; no label, model version or annotation names it).

    A class in use is a 409 saying what to do instead: add the new name and relabel its items.
    """
    return _change(name, json.name)


@api.delete("/classes/<path:name>")
@spec.validate(resp=Answers(HTTP_200=ClassList, problems=(401, 403, 404, 409, 503)))
def retire_class(name: str) -> Response:
    """Retire a class nobody used yet (added at run time; no label, model version or annotation names it).

    A class in use is a 409 saying what to do instead: relabel its items.
    """
    return _change(name, None)
