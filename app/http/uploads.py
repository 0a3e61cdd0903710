"""Images in requests: multipart files or JSON base64, checked against the upload limits (stored by
:mod:`app.core.uploads`).

Accepted shapes (``/v1/predict``, ``/v1/items``, ``/v1/labels``):

- ``multipart/form-data``: one or more file parts under any field name (``image``, ``images``, ``file``);
  other form fields (``label``, ``annotator``) are read by the view.
- JSON: ``{"images": ["<base64>", ...]}`` or ``{"images": [{"data": "<base64>", "filename": "a.png",
  ...other fields}]}``, or one image as ``{"image": "<base64>"}``.

Every rejection is a :class:`app.http.problems.Problem` (4xx) or a :class:`learner.errors.ImageError` that the
error handlers turn into a problem body; nothing is stored before all images of a request passed.
"""

from __future__ import annotations

import base64
import binascii
from typing import Annotated, Any

from flask import Request
from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic_core import PydanticCustomError

from app.core.uploads import Upload, check_upload
from app.http.problems import Problem

def decode_base64(value: Any, where: str) -> bytes:
    """The bytes of a base64 string (or a data: URL); a 400 problem for anything else."""
    if not isinstance(value, str) or not value:
        raise Problem(400, "Bad image field", f"{where} must be a non-empty base64 string", type="bad-request")
    if value.startswith("data:") and "," in value:  # a data: URL
        value = value.split(",", 1)[1]
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise Problem(400, "Bad base64", f"{where} is not valid base64 ({exc})", type="bad-base64") from exc


class ImageEntry(BaseModel):
    """One image of a JSON body with its name; other members travel with it (``Upload.fields``)."""

    model_config = ConfigDict(extra="allow")

    data: str = Field(min_length=1, description="the image file, base64 (a data: URL works too)")
    filename: str | None = None


class ImagesBody(BaseModel):
    """Images as JSON: ``{"images": ["<base64>" or {"data": "<base64>", "filename": ...}, ...]}`` or one as
    ``{"image": "<base64>", ...other members}``."""

    model_config = ConfigDict(extra="allow")

    images: list[Annotated[str, Field(min_length=1)] | ImageEntry] | None = None
    image: str | None = Field(None, min_length=1, description="one image, base64")

    @model_validator(mode="after")
    def _one_of_them(self) -> "ImagesBody":
        if self.images is None and self.image is None:
            raise PydanticCustomError("missing", "send 'images' (a list) or 'image' (base64) in the JSON body")
        return self

    def entries(self) -> list[tuple[bytes, str, dict[str, Any]]]:
        """(decoded bytes, name, other members) per image."""
        if self.images is None:
            return [(decode_base64(self.image, "image"), "image", dict(self.model_extra or {}))]
        entries = []
        for index, entry in enumerate(self.images):
            where = f"images[{index}]"
            if isinstance(entry, ImageEntry):
                entries.append((decode_base64(entry.data, f"{where}.data"), entry.filename or where, dict(entry.model_extra or {})))
            else:
                entries.append((decode_base64(entry, where), where, {}))
        return entries


class ImageFiles(BaseModel):
    """Images as ``multipart/form-data``: one or more file parts, under any field name."""

    model_config = ConfigDict(extra="allow")

    image: Any = Field(None, json_schema_extra={"type": "string", "format": "binary"})


def read_uploads(
    request: Request, body: ImagesBody | None, *, max_images: int, max_pixels: int, max_request_pixels: int | None = None
) -> list[Upload]:
    """The request's images (its file parts, or ``body``: its JSON, checked by the route), each checked from its
    header: a known format, within the pixel limit, and all of them together within ``max_request_pixels`` (so
    64 images just under the per-image limit cannot be decoded at once)."""
    if request.mimetype == "multipart/form-data":
        entries = []
        for field_name, storage in request.files.items(multi=True):
            data = storage.read()
            entries.append((data, storage.filename or field_name, {}))
    elif body is not None:
        entries = body.entries()
    else:
        raise Problem(
            415 if request.content_length else 400,
            "Missing images",
            "send images as multipart/form-data file parts or as JSON {\"images\": [\"<base64>\", ...]}",
            type="missing-field",
            field="images",
        )
    if not entries:
        raise Problem(400, "Missing images", "the request holds no image", type="missing-field", field="images")
    if len(entries) > max_images:
        raise Problem(
            413,
            "Too many images",
            f"{len(entries)} images in one request; the limit is {max_images}: split the request",
            type="too-many-images",
            max_images=max_images,
        )
    uploads = [check_upload(data, name, max_pixels, extra) for data, name, extra in entries]
    check_pixel_budget(uploads, max_request_pixels)
    return uploads


def check_pixel_budget(uploads: list[Upload], max_request_pixels: int | None) -> None:
    """413 when the images of one request hold more pixels together than ``max_request_pixels``."""
    total = sum(upload.n_pixels for upload in uploads)
    if max_request_pixels is not None and total > max_request_pixels:
        raise Problem(
            413,
            "Too many pixels",
            f"the {len(uploads)} images hold {total:,} pixels together; one request may hold {max_request_pixels:,}: "
            "send fewer or smaller images per request",
            type="too-many-pixels",
            max_request_pixels=max_request_pixels,
        )
