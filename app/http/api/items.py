"""``/v1/items``: images added to the pool, and the items listed (by split, in conflict, or quarantined)."""

from __future__ import annotations

from typing import Any, Literal

import tarfile

from flask import Response, jsonify, request
from pydantic import BaseModel, ConfigDict, Field

from app.http.api.common import api, request_uploads, services
from app.http.records import to_json
from app.http.openapi import Answers, spec
from app.http.problems import Problem
from app.core.imports import import_images, open_tar, tar_candidates
from app.core.uploads import items_for_uploads
from app.http.uploads import ImageFiles, ImagesBody
from app.store import SPLITS, NewItem


class ItemAdded(BaseModel):
    """An image's item, and whether this request created it (the same image is the same item)."""

    item_id: str
    created: bool


class ItemsAdded(BaseModel):
    """One entry per image, in request order."""

    items: list[ItemAdded]


class ItemsQuery(BaseModel):
    """Which items: a split, the conflicts or the quarantined ones, a page of them."""

    split: Literal[SPLITS] | None = Field(None, description="only this split")  # type: ignore[valid-type]
    conflicts: bool = Field(False, description="the items whose annotators disagree, each with all its active labels")
    quarantined: bool = Field(False, description="the items set aside because their image is missing or unreadable")
    suspect: bool = Field(
        False, description="the labelled items whose label looks wrong (the newest checked version's label checks), each "
        "with the class the model believes (suggested) and a label quality score (low: suspect); split=holdout for the holdout's",
    )
    limit: int = Field(100, ge=1, le=1000, description="page size")
    offset: int = Field(0, ge=0, le=10**9, description="items to skip")


class ItemsPage(BaseModel):
    """A page of items, newest first (``counts``: items per split, for the plain listing)."""

    model_config = ConfigDict(extra="allow")

    items: list[dict[str, Any]]
    limit: int
    offset: int


class Item(BaseModel):
    """One item with its current label, latest prediction and review status."""

    model_config = ConfigDict(extra="allow")

    id: str
    split: str


@api.post("/items")
@spec.validate(resp=Answers(HTTP_201=ItemsAdded, problems=(401, 403, 413, 415, 422)))
def add_items(json: ImagesBody, form: ImageFiles) -> tuple[Response, int]:
    """Add unlabelled images to the pool; the query strategy decides which ones annotators see."""
    svc = services()
    uploads = request_uploads(svc, json)
    # Decode and embed now: a truncated file is refused here instead of breaking every later re-scoring.
    svc.embeddings.embed([upload.image for upload in uploads])
    new_items: dict[str, NewItem] = {}
    answer = [{"item_id": item_id, "created": created} for item_id, created in items_for_uploads(svc.store, svc.data_dir, uploads, "pool", new_items)]
    svc.store.add_items(list(new_items.values()))
    if new_items:
        svc.wake("refresh-queue")
    return jsonify({"items": answer}), 201


class BulkQuery(BaseModel):
    """Where the tar's images go: the pool, or labelled (members named ``<class>/<image>``) into training or holdout."""

    labelled: bool = Field(False, description="members named <class>/<image>: labelled training items (source import)")
    holdout: bool = Field(False, description="members named <class>/<image>: a labelled holdout")


class SkippedFile(BaseModel):
    """A member not imported, and why (``not an image``, ``truncated``, ``too many pixels``, ``unreadable``, ...)."""

    name: str
    reason: str
    detail: str


class ImportAnswer(BaseModel):
    """What the import did: new items, images already there, each member skipped, labels per class."""

    imported: int
    duplicates: int
    skipped: list[SkippedFile]
    skipped_by_reason: dict[str, int]
    labels: dict[str, int]


@api.post("/items/bulk")
@spec.validate(resp=Answers(HTTP_200=ImportAnswer, problems=(400, 401, 403, 413, 415)))
def add_items_bulk(query: BulkQuery) -> tuple[Response, int]:
    """Import a tar (``application/x-tar``, gzip and friends too) of images, read as a stream: each member checked
    as an upload is, within ``service.max_request_bytes``, the whole body within ``service.bulk_max_bytes``.
    Answers the same summary as ``juicer import``; sent again, it imports only what is not there yet."""
    svc = services()
    if query.labelled and query.holdout:
        raise Problem(400, "Bad query", "labelled and holdout exclude each other", type="bad-request")
    if request.mimetype not in ("application/x-tar", "application/gzip", "application/x-gtar", "application/octet-stream"):
        raise Problem(415, "Not a tar", f"send the images as one tar (Content-Type application/x-tar), not {request.mimetype or 'nothing'}",
                      type="unsupported-media-type")  # fmt: skip
    limits = svc.settings.service
    request.max_content_length = limits.bulk_max_bytes
    try:
        archive = open_tar(request.stream)
    except (tarfile.TarError, EOFError) as exc:
        raise Problem(400, "Not a tar", f"the body is not a tar archive ({exc})", type="bad-archive") from exc
    with archive:
        labelled = query.labelled or query.holdout
        candidates = tar_candidates(archive, labelled=labelled, max_bytes=limits.max_request_bytes)
        summary = import_images(
            candidates, store=svc.store, data_dir=svc.data_dir, max_pixels=svc.settings.learner.max_image_pixels,
            embed=svc.embeddings.embed, split="holdout" if query.holdout else "seed" if labelled else "pool",
            classes=list(svc.classes),
        )  # fmt: skip
    if summary.imported:
        svc.wake("refresh-queue")
    return jsonify(summary.to_dict()), 200


@api.get("/items")
@spec.validate(resp=Answers(HTTP_200=ItemsPage, problems=(401,)))
def list_items(query: ItemsQuery) -> Response:
    """Items, newest first; or the items whose annotators disagree, each with all its active labels (the consensus
    of the label checks trains, until it is computed the newest one); or the suspected label errors; or the items set aside because their image is missing or unreadable."""
    store = services().store
    page = {"limit": query.limit, "offset": query.offset}
    if query.quarantined:
        rows = store.quarantined(limit=query.limit, offset=query.offset)
        return jsonify({"items": to_json(rows)} | page)
    if query.suspect:
        split = "holdout" if query.split == "holdout" else "training"
        version = store.checked_version()
        rows = store.label_checks(version, split=split, suspect=True, limit=query.limit, offset=query.offset)
        return jsonify({"items": to_json(rows), "model_version": version} | page)
    if query.conflicts:
        rows = store.conflicts(limit=query.limit, offset=query.offset)
        return jsonify({"items": to_json(rows)} | page)
    rows = store.list_items(split=query.split, limit=query.limit, offset=query.offset)
    return jsonify({"items": to_json(rows), "counts": store.count_items()} | page)


@api.get("/items/<path:item_id>")
@spec.validate(resp=Answers(HTTP_200=Item, problems=(401, 404)))
def get_item(item_id: str) -> Response:
    """One item with its current label, latest prediction and review status."""
    item = services().store.get_item(item_id)
    if item is None:
        raise Problem(404, "Unknown item", f"no item {item_id!r}", type="unknown-item", item_id=item_id)
    return jsonify(to_json(item))
