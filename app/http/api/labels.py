"""``POST /v1/labels``: labels for known items, or new images with their labels (seed labels).

The whole body is checked before anything is stored: its shape by :class:`LabelsBody` (or :class:`LabelsForm`),
then the classes, the items named and the images.
"""

from __future__ import annotations

from typing import Any, Sequence

from flask import Response, jsonify, request
from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic_core import PydanticCustomError

from app.core.classes import HOW_TO_ADD
from app.http.api.common import api, request_uploads, services
from app.http.openapi import Answers, spec
from app.http.problems import Problem
from app.core.uploads import Upload, check_upload, items_for_uploads
from app.http.uploads import check_pixel_budget, decode_base64
from app.services import Services
from app.store import NewItem, NewLabel, StoreError

MAX_LABELS = 10_000  # labels in one request


class LabelEntry(BaseModel):
    """A label for a known item (``item_id``) or for a new image (``image``, base64)."""

    model_config = ConfigDict(extra="allow")

    label: str = Field(min_length=1, description="a class name")
    item_id: str | None = Field(None, min_length=1)
    image: str | None = Field(None, min_length=1, description="a new image, base64 (a seed item)")
    filename: str | None = None
    annotator: str | None = None

    @model_validator(mode="after")
    def _names_its_item(self) -> "LabelEntry":
        if self.image is None and self.item_id is None:
            raise PydanticCustomError("missing", "a label needs 'item_id' (a known item) or 'image' (base64)")
        return self


class LabelsBody(BaseModel):
    """``{"labels": [{"item_id": ..., "label": ...}, ...]}``; one label may come bare (``{"item_id", "label"}``)."""

    labels: list[LabelEntry] = Field(min_length=1)

    @model_validator(mode="before")
    @classmethod
    def _one_bare_label(cls, data: Any) -> Any:
        if isinstance(data, dict) and "labels" not in data and "label" in data:
            return {"labels": [data]}
        return data


class LabelsForm(BaseModel):
    """New images as file parts with their ``label`` (one, or one per file) and the ``annotator``."""

    model_config = ConfigDict(extra="allow")

    label: list[str] = Field(min_length=1, description="one label for every file, or one per file")
    annotator: str | None = None
    image: Any = Field(None, json_schema_extra={"type": "string", "format": "binary"})


class LabelRecorded(BaseModel):
    """A stored label."""

    label_id: int
    item_id: str
    label: str


class LabelsRecorded(BaseModel):
    """The stored labels, and how close the next retrain is."""

    labels: list[LabelRecorded]
    new_labels_since_model: int
    retrain_after_labels: int


@api.post("/labels")
@spec.validate(resp=Answers(HTTP_201=LabelsRecorded, problems=(401, 403, 404, 409, 413, 415, 422)))
def add_labels(json: LabelsBody, form: LabelsForm) -> tuple[Response, int]:
    """Add labels: for known items (JSON ``{"labels": [{"item_id", "label"}]}``) or with new images (seed labels)."""
    svc = services()
    limits = svc.settings.service
    new_items: dict[str, NewItem] = {}
    new_labels: list[NewLabel] = []
    if form is not None and request.mimetype == "multipart/form-data":
        uploads = request_uploads(svc, None)
        if len(form.label) not in (1, len(uploads)):
            raise Problem(400, "Labels do not match files", f"{len(form.label)} labels for {len(uploads)} files", type="bad-request")
        pairs = [(upload, form.label[0] if len(form.label) == 1 else form.label[i]) for i, upload in enumerate(uploads)]
        _labels_for_uploads(svc, pairs, form.annotator, new_items, new_labels)
    elif json is None:
        raise Problem(415, "JSON expected", "send Content-Type: application/json with a JSON object", type="unsupported-media-type")
    else:
        if len(json.labels) > MAX_LABELS:
            raise Problem(413, "Too many labels", f"at most {MAX_LABELS} labels per request", type="too-many-labels")
        image_entries: list[tuple[int, LabelEntry]] = []
        classes = svc.classes
        for index, entry in enumerate(json.labels):
            _known_label(entry.label, f"labels[{index}]", classes)
            if entry.image is not None:
                image_entries.append((index, entry))
            else:
                new_labels.append(NewLabel(entry.item_id, entry.label, "api", entry.annotator or None))
        if image_entries:
            if len(image_entries) > limits.max_images_per_request:
                raise Problem(413, "Too many images", f"at most {limits.max_images_per_request} images per request", type="too-many-images")
            max_pixels = svc.settings.learner.max_image_pixels
            uploads = [
                check_upload(decode_base64(entry.image, f"labels[{index}].image"), entry.filename or f"labels[{index}]", max_pixels)
                for index, entry in image_entries
            ]
            check_pixel_budget(uploads, limits.max_request_pixels)
            pairs = [(upload, entry.label) for upload, (_, entry) in zip(uploads, image_entries)]
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


def _known_label(label: str, where: str, classes: Sequence[str]) -> None:
    """422 for a label that is not one of the classes (the store's list, read once per request: it can grow)."""
    if label not in classes:
        raise Problem(
            422,
            "Unknown label",
            f"{where}: {label!r} is not one of the classes: {', '.join(classes)}; to make it one, {HOW_TO_ADD}",
            type="unknown-label",
            label=label,
            classes=list(classes),
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


def _labels_for_uploads(
    svc: Services, pairs: list[tuple[Upload, str]], annotator: str | None, new_items: dict[str, NewItem], new_labels: list[NewLabel]
) -> None:
    classes = svc.classes
    for upload, label in pairs:
        _known_label(label, upload.image.source, classes)
    # Decode every image before anything is stored: a truncated file fails the whole request.
    svc.embeddings.embed([upload.image for upload, _ in pairs])
    item_ids = items_for_uploads(svc.store, svc.data_dir, [upload for upload, _ in pairs], "seed", new_items)
    for (item_id, _), (_, label) in zip(item_ids, pairs):
        new_labels.append(NewLabel(item_id, label, "api", annotator))
