"""The gallery: a fixed sample of holdout images under every model version, the wrong guesses in red.

The animation the origin study wanted: the same holdout images captioned by models trained on more and
more labels. :func:`build_gallery` computes each version's guesses from the **cached embeddings** of the
sample and the **stored heads** (``models/<version>.pkl``) only: the backbone never runs, and a sample
image whose embedding is not cached is left out rather than embedded. :func:`gallery_gif` draws the same
thing as one animated GIF (Pillow), one frame per version.

The sample is fixed: the ``size`` holdout items with the smallest content hashes (a stable pseudo-random
pick that survives restarts and never depends on a model).
"""

from __future__ import annotations

import base64
import io
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont, ImageOps

from app.core.datadir import image_file
from app.core.serving import ModelLoadError, load_head, model_from_row
from app.store import ModelVersion

logger = logging.getLogger(__name__)

THUMB_PIXELS = 64
GIF_CELL = (84, 100)  # thumbnail plus caption
GIF_COLUMNS = 8
GIF_FRAME_MS = 900
RIGHT = (46, 125, 50)
WRONG = (198, 40, 40)


@dataclass(frozen=True)
class GalleryItem:
    """One holdout image of the sample: id, true label, its thumbnail as PNG bytes."""

    item_id: str
    truth: str
    thumbnail: bytes = field(repr=False)

    @property
    def data_uri(self) -> str:
        return "data:image/png;base64," + base64.b64encode(self.thumbnail).decode("ascii")


@dataclass(frozen=True)
class GalleryVersion:
    """One model version's guesses for the sample (in sample order)."""

    version: str
    n_labels: int
    labels_per_class: float
    guesses: list[str]
    right: int


@dataclass(frozen=True)
class Gallery:
    """The sample and every version's guesses; ``versions`` oldest first."""

    items: list[GalleryItem]
    versions: list[GalleryVersion]
    left_out: int = 0  # sample items without a cached embedding

    def to_json(self) -> dict[str, Any]:
        """For the page's stepper: versions and their captions (thumbnails stay in the HTML)."""
        return {
            "truth": [item.truth for item in self.items],
            "versions": [
                {"version": v.version, "n_labels": v.n_labels, "labels_per_class": v.labels_per_class,
                 "guesses": v.guesses, "right": v.right}
                for v in self.versions
            ],
        }


def thumbnail(path: Path, pixels: int = THUMB_PIXELS) -> bytes:
    """A square PNG thumbnail of an image file (small images are scaled up without blurring)."""
    with Image.open(path) as image:
        image = image.convert("RGB")
        resample = Image.Resampling.NEAREST if max(image.size) < pixels else Image.Resampling.LANCZOS
        image = ImageOps.fit(image, (pixels, pixels), method=resample)
        buffer = io.BytesIO()
        image.save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def gallery_sample(holdout: Sequence[Any], size: int) -> list[Any]:
    """The fixed sample: the ``size`` labelled holdout items with the smallest content hashes."""
    with_files = [row for row in holdout if row.image_path]
    return sorted(with_files, key=lambda row: row.content_hash)[:size]


def build_gallery(
    model_rows: Sequence[ModelVersion], holdout: Sequence[Any], cache: Any, data_dir: Path, size: int,
    backbone_id: str | None = None, memo: dict[str, np.ndarray] | None = None,
) -> Gallery:
    """Every version's guesses on the fixed sample, from cached embeddings and stored heads (never the backbone).

    ``holdout`` is the store's labelled holdout (:class:`app.store.LabelledItem`), ``cache`` an
    :class:`learner.cache.EmbeddingCache`, ``memo`` an optional in-memory map content hash -> vector.
    Versions trained on another backbone, or whose head no longer loads, are skipped.
    """
    sample = gallery_sample(holdout, size)
    hashes = [row.content_hash for row in sample]
    memo = memo or {}
    vectors = {h: memo[h] for h in hashes if h in memo}
    wanted = [h for h in hashes if h not in vectors]
    if wanted:
        vectors.update(cache.get_many(wanted))
    kept = [row for row in sample if row.content_hash in vectors]
    items = []
    for row in kept:
        try:
            items.append(GalleryItem(row.item_id, row.label, thumbnail(image_file(data_dir, row.image_path))))
        except OSError as exc:
            logger.warning("gallery: cannot read %s: %s", row.image_path, exc)
    kept = [row for row in kept if any(item.item_id == row.item_id for item in items)]
    X = np.stack([vectors[row.content_hash] for row in kept]).astype(np.float32) if kept else None
    versions = []
    for row in model_rows:
        if backbone_id is not None and row.backbone_id != backbone_id:
            continue
        try:
            model = model_from_row(row, load_head(Path(data_dir) / row.head_path))
        except ModelLoadError as exc:
            logger.warning("gallery: %s", exc)
            continue
        guesses = [] if X is None else [model.classes[j] for j in model.proba(X).argmax(axis=1)]
        right = sum(guess == item.truth for guess, item in zip(guesses, items))
        per_class = row.n_labels / max(len(row.classes), 1)
        versions.append(GalleryVersion(row.version, int(row.n_labels), per_class, guesses, right))
    return Gallery(items, versions, left_out=len(sample) - len(kept))


def _font(size: int) -> Any:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow without FreeType: the fixed bitmap font
        return ImageFont.load_default()


def gallery_gif(gallery: Gallery, frame_ms: int = GIF_FRAME_MS) -> bytes:
    """The gallery as an animated GIF: one frame per version, wrong guesses framed and captioned in red."""
    columns = min(GIF_COLUMNS, max(len(gallery.items), 1))
    rows = max(1, -(-len(gallery.items) // columns))
    cell_w, cell_h = GIF_CELL
    header = 28
    width, height = columns * cell_w + 8, rows * cell_h + header + 4
    title_font, caption_font = _font(16), _font(11)
    thumbs = [Image.open(io.BytesIO(item.thumbnail)).convert("RGB") for item in gallery.items]
    frames = []
    for version in gallery.versions or [GalleryVersion("no model yet", 0, 0.0, [], 0)]:
        frame = Image.new("RGB", (width, height), "white")
        draw = ImageDraw.Draw(frame)
        total = len(gallery.items)
        draw.text((6, 5), f"{version.version}: {version.n_labels} labels ({version.labels_per_class:.3g}/class), "
                          f"{version.right}/{total} right", fill="black", font=title_font)
        for index, (item, thumb) in enumerate(zip(gallery.items, thumbs)):
            x = 4 + (index % columns) * cell_w
            y = header + (index // columns) * cell_h
            guess = version.guesses[index] if index < len(version.guesses) else "?"
            colour = RIGHT if guess == item.truth else WRONG
            draw.rectangle([x + 7, y, x + 10 + THUMB_PIXELS, y + 3 + THUMB_PIXELS], fill=colour)
            frame.paste(thumb, (x + 9, y + 2))
            draw.text((x + cell_w // 2, y + THUMB_PIXELS + 6), guess[:13], fill=colour, font=caption_font, anchor="mt")
        frames.append(frame.convert("P", palette=Image.Palette.ADAPTIVE, colors=128))
    buffer = io.BytesIO()
    frames[0].save(buffer, format="GIF", save_all=True, append_images=frames[1:], duration=frame_ms, loop=0)
    return buffer.getvalue()


def gallery_html(gallery: Gallery, selected_version: str | None = None, title: str = "juicer gallery") -> str:
    """The gallery page (``app/http/templates/gallery.html``): server-rendered at ``selected_version`` (default the
    newest), with a stepper that re-captions the same images for every version without a reload."""
    from app.http.reports import templates

    names = [v.version for v in gallery.versions]
    selected = names.index(selected_version) if selected_version in names else max(len(names) - 1, 0)
    summary = ""
    if gallery.versions:
        v = gallery.versions[selected]
        summary = f"{v.version}: {v.n_labels} labels ({v.labels_per_class:.1f}/class), {v.right}/{len(gallery.items)} right"
    return templates().get_template("gallery.html").render(
        title=title, gallery=gallery, selected=selected, summary=summary, data=gallery.to_json(),
    )
