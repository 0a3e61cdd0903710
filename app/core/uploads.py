"""Images that arrive as bytes (an upload, a Label Studio task's image): checked from the header, stored once by
content hash under ``<data_dir>/files/images/`` (:mod:`app.core.datadir`), and resolved to items (the same content is the same item).

The HTTP edge (:mod:`app.http.uploads`) reads them out of requests; this module knows nothing of HTTP.
"""

from __future__ import annotations

import threading
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from app.core.datadir import write_image
from app.store import NewItem, Store
from learner.errors import ImageTooLargeError
from learner.images import BytesImage

EXTENSIONS = {"JPEG": "jpg", "PNG": "png", "GIF": "gif", "WEBP": "webp", "MPO": "jpg"}


@dataclass(frozen=True)
class Upload:
    """One image of a request, with the JSON members or form fields that came with it."""

    image: BytesImage
    extension: str
    fields: dict[str, Any] = field(default_factory=dict)
    n_pixels: int = 0  # width x height from the header

    @property
    def content_hash(self) -> str:
        """sha256 of the encoded bytes."""
        return self.image.content_hash

    @property
    def item_id(self) -> str:
        """The item id an upload gets: derived from its content, so the same image is the same item."""
        return upload_item_id(self.image.content_hash)


def upload_item_id(content_hash: str) -> str:
    """``img-`` and the first 24 hex digits of the content hash."""
    return f"img-{content_hash[:24]}"


def check_upload(data: bytes, name: str, max_pixels: int, fields: dict[str, Any] | None = None) -> Upload:
    """An :class:`Upload` once its header says it is an image within ``max_pixels`` (else an ImageError)."""
    image = BytesImage(data, source=name, max_pixels=max_pixels)
    info = image.info()  # raises ImageDecodeError naming the upload for what is not an image
    if info.n_pixels > max_pixels:
        raise ImageTooLargeError(f"{info.width}x{info.height} pixels is over the limit of {max_pixels}", name)
    return Upload(image, EXTENSIONS.get(info.format, "img"), dict(fields or {}), info.n_pixels)


def store_image(data_dir: Path, upload: Upload) -> str:
    """Write the upload once (atomically) as ``images/<hash>.<ext>``; returns that ``image_path``."""
    return write_image(data_dir, upload.content_hash, upload.extension, upload.image.data)


def items_for_uploads(
    store: Store, data_dir: Path, uploads: list[Upload], split: str, new_items: dict[str, NewItem]
) -> list[tuple[str, bool]]:
    """(item id, created) per upload: the known item with the same content, or a new one in ``split``.

    New items are added to ``new_items`` (their image stored once); the caller writes them with its own rows.
    """
    known = store.item_ids_by_hash([upload.content_hash for upload in uploads])
    resolved = []
    for upload in uploads:
        item_id = known.get(upload.content_hash)
        created = item_id is None and upload.item_id not in new_items
        if created:
            new_items[upload.item_id] = NewItem(
                upload.item_id, upload.content_hash, upload.image.source, split, store_image(data_dir, upload)
            )
        resolved.append((item_id or upload.item_id, created))
    return resolved


_beside_lock = threading.Lock()
_beside: ThreadPoolExecutor | None = None


def beside(function: Callable[..., Any], *args: Any) -> Future:
    """Run ``function(*args)`` on the process's I/O thread while the caller goes on (a request writes its image
    files and reads its items while the backbone runs: both wait on the disk, not the CPU). Made on first use,
    so never before a fork."""
    global _beside
    with _beside_lock:
        if _beside is None:
            _beside = ThreadPoolExecutor(max_workers=4, thread_name_prefix="juicer-io")
        return _beside.submit(function, *args)
