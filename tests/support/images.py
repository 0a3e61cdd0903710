"""Synthetic PNGs and the store items they back: one builder for every suite that needs a picture.

:func:`png` makes the bytes (a noisy colour, or grey noise), :func:`add_png_item` writes them into a data folder's
``images/`` and adds the item to the store, as the service does for an image it receives.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image


def png(
    colour: tuple[int, int, int] | None = None,
    size: tuple[int, int] = (16, 16),
    seed: int | np.random.Generator = 0,
    noise: int = 15,
) -> bytes:
    """A PNG of ``colour`` plus uniform noise in [-noise, noise] per channel (RGB), or, with no colour, greyscale
    noise over the whole range. Every seed gives distinct bytes; a Generator ``seed`` is drawn from as it stands."""
    rng = np.random.default_rng(seed)  # a Generator is returned unchanged
    if colour is None:
        pixels, mode = rng.integers(0, 255, size, dtype=np.uint8), "L"
    else:
        noisy = np.array(colour)[None, None, :] + rng.integers(-noise, noise + 1, (*size, 3))
        pixels, mode = np.clip(noisy, 0, 255).astype(np.uint8), "RGB"
    buffer = io.BytesIO()
    Image.fromarray(pixels, mode).save(buffer, format="PNG")
    return buffer.getvalue()


def add_png_item(
    store: Any, data_dir: Path, item_id: str, data: bytes, split: str = "pool", source: str | None = None,
    file_stem: str | None = None,
) -> Path:
    """Write ``data`` to ``images/<file_stem or its content hash>.png`` under ``data_dir/files`` and add it to
    ``store`` as ``item_id`` (source ``pool/<item_id>`` unless given); the image file's path."""
    from app.core.datadir import image_file
    from app.store import NewItem
    from learner.images import content_hash

    digest = content_hash(data)
    relative = f"images/{file_stem or digest}.png"
    path = image_file(data_dir, relative)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    store.add_items([NewItem(item_id, digest, source or f"pool/{item_id}", split, relative)])
    return path


def tar_of(members: dict[str, bytes], compression: str = "") -> bytes:
    """A tar archive (``compression`` "gz" for a .tgz) holding ``members``: name -> bytes, in order."""
    import tarfile

    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode=f"w:{compression}" if compression else "w") as archive:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()
