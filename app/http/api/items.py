"""``/v1/items``: images added to the pool, and the items listed (by split, in conflict, or quarantined)."""

from __future__ import annotations

from typing import Any, Literal

from flask import Response, jsonify
from pydantic import BaseModel, ConfigDict, Field

from app.http.api.common import api, request_uploads, services
from app.http.records import to_json
from app.http.openapi import Answers, spec
from app.http.problems import Problem
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


@api.get("/items")
@spec.validate(resp=Answers(HTTP_200=ItemsPage, problems=(401,)))
def list_items(query: ItemsQuery) -> Response:
    """Items, newest first; or the items whose annotators disagree, each with all its active labels (the newest
    one trains); or the items set aside because their image is missing or unreadable."""
    store = services().store
    page = {"limit": query.limit, "offset": query.offset}
    if query.quarantined:
        rows = store.quarantined(limit=query.limit, offset=query.offset)
        return jsonify({"items": to_json(rows)} | page)
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
