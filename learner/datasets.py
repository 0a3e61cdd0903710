"""Labelled image datasets: a folder per class (the TF flowers layout) and Fashion-MNIST from idx files.

A :class:`Dataset` holds cheap :class:`~learner.images.ImageSource` objects, never decoded pixels, so loading
one is fast and the embedding cache decides what actually gets decoded. :func:`download_flowers` fetches and
safely unpacks the public TF flowers archive; the URL is the caller's (``settings.flowers_url``).
"""

from __future__ import annotations

import gzip
import http.client
import logging
import os
import struct
import tarfile
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from learner.errors import DatasetError
from learner.images import ArrayImage, FileImage, ImageSource, sniff_format
from learner.sampling import stratified_split

log = logging.getLogger(__name__)

FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)
# Debian's dataset-fashion-mnist file names, per split, in the order the split is pooled.
FASHION_MNIST_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "t10k": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
_IDX_IMAGES_MAGIC = 0x00000803  # unsigned byte, 3 dimensions
_IDX_LABELS_MAGIC = 0x00000801  # unsigned byte, 1 dimension

FLOWERS_FOLDER = "flower_photos"
_DOWNLOAD_CHUNK = 1 << 20


@dataclass(eq=False)
class Dataset:
    """Images with integer labels: ``labels[i]`` indexes ``class_names`` for ``sources[i]`` / ``item_ids[i]``."""

    name: str
    class_names: list[str]
    sources: list[ImageSource]
    labels: np.ndarray
    item_ids: list[str]

    def __post_init__(self) -> None:
        self.labels = np.asarray(self.labels, dtype=np.int64).reshape(-1)
        n = len(self.sources)
        if len(self.labels) != n or len(self.item_ids) != n:
            raise DatasetError(
                f"dataset {self.name!r}: {n} sources, {len(self.labels)} labels and {len(self.item_ids)} item ids "
                "must have the same length"
            )
        if n and (self.labels.min() < 0 or self.labels.max() >= len(self.class_names)):
            raise DatasetError(f"dataset {self.name!r}: labels must index its {len(self.class_names)} class names")
        if len(set(self.item_ids)) != n:
            raise DatasetError(f"dataset {self.name!r}: item ids must be unique")

    def __len__(self) -> int:
        return len(self.sources)

    @property
    def n_classes(self) -> int:
        """The number of class names (some may have no items in a subset)."""
        return len(self.class_names)

    @property
    def label_names(self) -> list[str]:
        """Each item's class name."""
        return [self.class_names[i] for i in self.labels]

    def class_counts(self) -> dict[str, int]:
        """Items per class name, in ``class_names`` order (zero for empty classes)."""
        counts = np.bincount(self.labels, minlength=len(self.class_names))
        return {name: int(count) for name, count in zip(self.class_names, counts)}

    def subset(self, indices: Sequence[int] | np.ndarray, name: str | None = None) -> "Dataset":
        """The items at ``indices`` (in that order), with the same class names."""
        index = np.asarray(indices, dtype=np.int64).reshape(-1)
        if index.size and (index.min() < -len(self) or index.max() >= len(self)):
            raise IndexError(f"dataset {self.name!r} has {len(self)} items; index out of range")
        return Dataset(
            name=name or self.name,
            class_names=list(self.class_names),
            sources=[self.sources[i] for i in index],
            labels=self.labels[index],
            item_ids=[self.item_ids[i] for i in index],
        )

    def limit_per_class(self, per_class_limit: int, seed: int = 0) -> "Dataset":
        """At most ``per_class_limit`` items per class, chosen at random with ``seed``, in their original order."""
        return self.subset(per_class_indices(self.labels, per_class_limit, seed))

    def describe(self) -> str:
        """A few lines for people: name, size and per-class counts."""
        lines = [f"{self.name}: {len(self)} images, {self.n_classes} classes"]
        width = max((len(n) for n in self.class_names), default=0)
        lines += [f"  {name:<{width}}  {count:>6}" for name, count in self.class_counts().items()]
        return "\n".join(lines)


def per_class_indices(labels: np.ndarray, per_class_limit: int, seed: int = 0) -> np.ndarray:
    """Sorted indices of at most ``per_class_limit`` items per class, drawn without replacement with ``seed``."""
    if per_class_limit < 1:
        raise DatasetError(f"per_class_limit must be at least 1, got {per_class_limit}")
    return stratified_split(labels, per_class_limit, seed)[0]


def load_dataset(
    spec: str | Path,
    *,
    fashion_mnist_dir: str | Path,
    per_class_limit: int | None = None,
    seed: int = 0,
    max_pixels: int | None = None,
) -> Dataset:
    """``"fashion-mnist"`` (from ``fashion_mnist_dir``) or a ``<class>/<image>`` folder, optionally limited per class."""
    if str(spec) == "fashion-mnist":
        return load_fashion_mnist(fashion_mnist_dir, per_class_limit=per_class_limit, seed=seed)
    dataset = load_folder(spec, max_pixels=max_pixels)
    return dataset if per_class_limit is None else dataset.limit_per_class(per_class_limit, seed)


# ---------------------------------------------------------------------------------------------- folders


def _is_image_file(path: Path) -> bool:
    """True when ``path`` is a regular, non-hidden file whose first bytes are a supported image format."""
    if path.name.startswith(".") or not path.is_file():
        return False
    try:
        with path.open("rb") as handle:
            return sniff_format(handle.read(12)) is not None
    except OSError as exc:
        log.warning("skipping %s: cannot read it (%s)", path, exc.strerror)
        return False


def load_folder(root: str | Path, *, name: str | None = None, max_pixels: int | None = None) -> Dataset:
    """A dataset from ``root/<class>/<image>`` (the TF flowers layout); class names sorted; non-images skipped.

    Images are recognised by content, not extension. Top-level files (a LICENSE.txt) and hidden entries are
    ignored; nested folders inside a class are searched too. Raises DatasetError when nothing usable is there.
    """
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"dataset folder {root} does not exist or is not a folder; expected root/<class>/<image>")
    class_dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not class_dirs:
        raise DatasetError(f"dataset folder {root} has no class folders; expected root/<class>/<image>")
    kwargs = {} if max_pixels is None else {"max_pixels": max_pixels}
    class_names: list[str] = []
    sources: list[ImageSource] = []
    labels: list[int] = []
    item_ids: list[str] = []
    skipped = 0
    for class_dir in class_dirs:
        files = sorted(
            p for p in class_dir.rglob("*") if not any(part.startswith(".") for part in p.relative_to(class_dir).parts)
        )
        images = [p for p in files if _is_image_file(p)]
        skipped += sum(1 for p in files if p.is_file()) - len(images)
        if not images:
            log.warning("skipping class folder %s: it holds no images", class_dir)
            continue
        label = len(class_names)
        class_names.append(class_dir.name)
        for path in images:
            sources.append(FileImage(path, **kwargs))
            labels.append(label)
            item_ids.append(path.relative_to(root).as_posix())
    if skipped:
        log.info("%s: skipped %d files that are not JPEG, PNG, GIF or WebP images", root, skipped)
    if not sources:
        raise DatasetError(f"dataset folder {root} holds no JPEG, PNG, GIF or WebP images in its class folders")
    return Dataset(name=name or root.name, class_names=class_names, sources=sources, labels=np.array(labels), item_ids=item_ids)


# ---------------------------------------------------------------------------------------------- Fashion-MNIST


def _read_idx(path: Path, magic: int) -> np.ndarray:
    """An idx file (optionally gzipped) as a uint8 array; DatasetError on a wrong magic number or size."""
    try:
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rb") as handle:
            raw = handle.read()
    except FileNotFoundError as exc:
        raise DatasetError(
            f"{path} not found; install Debian's dataset-fashion-mnist or set fashion_mnist_dir to its idx files"
        ) from exc
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        raise DatasetError(f"{path}: cannot read the idx file ({exc})") from exc
    if len(raw) < 4 or struct.unpack(">I", raw[:4])[0] != magic:
        found = struct.unpack(">I", raw[:4])[0] if len(raw) >= 4 else None
        raise DatasetError(f"{path}: not an idx file of the expected kind (magic {found!r}, expected {magic:#010x})")
    n_dims = magic & 0xFF
    header = 4 + 4 * n_dims
    if len(raw) < header:
        raise DatasetError(f"{path}: the idx header is truncated")
    shape = struct.unpack(f">{n_dims}I", raw[4:header])
    expected = int(np.prod(shape))
    if len(raw) - header != expected:
        raise DatasetError(f"{path}: holds {len(raw) - header} data bytes, the header promises {expected} for {shape}")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


def load_fashion_mnist(idx_dir: str | Path, *, per_class_limit: int | None = None, seed: int = 0) -> Dataset:
    """Fashion-MNIST (train and t10k pooled, 70,000 items) from the idx files in ``idx_dir``.

    With ``per_class_limit``, keep that many items per class, chosen at random with ``seed`` (the same seed
    gives the same items), in their original order. Item ids look like ``fashion-mnist/train/00123``.
    """
    idx_dir = Path(idx_dir)
    if per_class_limit is not None and per_class_limit < 1:
        raise DatasetError(f"per_class_limit must be at least 1, got {per_class_limit}")
    images_parts, labels_parts, ids = [], [], []
    for split, (image_file, label_file) in FASHION_MNIST_FILES.items():
        images = _read_idx(idx_dir / image_file, _IDX_IMAGES_MAGIC)
        labels = _read_idx(idx_dir / label_file, _IDX_LABELS_MAGIC)
        if len(images) != len(labels):
            raise DatasetError(f"{idx_dir}: {split} has {len(images)} images but {len(labels)} labels")
        if labels.size and labels.max() >= len(FASHION_MNIST_CLASSES):
            raise DatasetError(f"{idx_dir / label_file}: label {labels.max()} is not one of the 10 classes")
        images_parts.append(images)
        labels_parts.append(labels)
        ids.extend(f"fashion-mnist/{split}/{i:05d}" for i in range(len(images)))
    all_images = np.concatenate(images_parts)
    all_labels = np.concatenate(labels_parts).astype(np.int64)
    keep = np.arange(len(all_labels))
    if per_class_limit is not None:
        keep = per_class_indices(all_labels, per_class_limit, seed)
    sources: list[ImageSource] = [ArrayImage(all_images[i], ids[i]) for i in keep]
    return Dataset(
        name="fashion-mnist",
        class_names=list(FASHION_MNIST_CLASSES),
        sources=sources,
        labels=all_labels[keep],
        item_ids=[ids[i] for i in keep],
    )


# ---------------------------------------------------------------------------------------------- TF flowers


def download_flowers(url: str, dest_dir: str | Path, *, progress: bool = True, timeout: float = 30.0) -> Path:
    """Download and unpack the TF flowers archive into ``dest_dir/flower_photos`` and return that folder.

    Idempotent: if the folder is already there, nothing is downloaded. The archive is streamed into a temporary
    file, extracted with tarfile's ``data`` filter (no absolute paths, no ``..``, no links out) into a
    temporary folder, and moved into place only when complete. Raises DatasetError on HTTP errors, an
    unreachable host, a truncated download or an archive that is not a tar of ``flower_photos/<class>/*.jpg``.
    """
    dest_dir = Path(dest_dir)
    target = dest_dir / FLOWERS_FOLDER
    if target.is_dir():
        log.info("%s already exists; not downloading", target)
        return target
    dest_dir.mkdir(parents=True, exist_ok=True)
    archive_fd, archive_name = tempfile.mkstemp(prefix=".flowers-", suffix=".tgz.part", dir=dest_dir)
    archive = Path(archive_name)
    try:
        with os.fdopen(archive_fd, "wb") as handle:
            _download(url, handle, progress=progress, timeout=timeout)
        with tempfile.TemporaryDirectory(prefix=".flowers-", dir=dest_dir) as scratch:
            _extract(archive, Path(scratch), url)
            unpacked = Path(scratch) / FLOWERS_FOLDER
            if not unpacked.is_dir():
                raise DatasetError(f"the archive from {url} does not hold a {FLOWERS_FOLDER}/ folder")
            load_folder(unpacked)  # raises DatasetError if there are no class folders with images
            os.replace(unpacked, target)
    finally:
        archive.unlink(missing_ok=True)
    log.info("flowers unpacked into %s", target)
    return target


def _download(url: str, handle, *, progress: bool, timeout: float) -> None:
    """Stream ``url`` into the open binary file ``handle`` with a progress bar."""
    from tqdm import tqdm  # only needed here; keeps importing the module light

    request = urllib.request.Request(url, headers={"User-Agent": "juicer"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 - the URL is the user's setting
            length = response.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
            received = 0
            with tqdm(total=total, unit="B", unit_scale=True, desc="flowers", disable=not progress) as bar:
                while chunk := response.read(_DOWNLOAD_CHUNK):
                    handle.write(chunk)
                    received += len(chunk)
                    bar.update(len(chunk))
    except urllib.error.HTTPError as exc:
        raise DatasetError(f"download of {url} failed: HTTP {exc.code} {exc.reason}; check the URL (flowers_url)") from exc
    except urllib.error.URLError as exc:
        raise DatasetError(f"cannot reach {url}: {exc.reason}; check the URL and your network") from exc
    except (OSError, ValueError, http.client.HTTPException) as exc:
        raise DatasetError(f"download of {url} failed ({type(exc).__name__}: {exc}); try again") from exc
    if total is not None and received != total:
        raise DatasetError(f"download of {url} is incomplete: {received} of {total} bytes; try again")


def _extract(archive: Path, into: Path, url: str) -> None:
    """Extract a tar archive safely (tarfile's ``data`` filter) into ``into``."""
    try:
        with tarfile.open(archive, mode="r:*") as tar:
            tar.extractall(into, filter="data")
    except tarfile.FilterError as exc:
        raise DatasetError(f"the archive from {url} holds an unsafe member ({exc}); refusing to extract it") from exc
    except (tarfile.TarError, EOFError, OSError, gzip.BadGzipFile) as exc:
        raise DatasetError(f"the archive from {url} is not a valid tar archive ({exc})") from exc

