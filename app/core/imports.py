"""Bulk import: image files, folders, lists of paths or URLs, or a tar stream, into the store as items.

Every image is checked as an upload is (:func:`app.core.uploads.check_upload`: a known format within the pixel
limit), decoded once (by the embedding, or by a small check decode with ``embed=None``), stored once by content hash
and registered in batches: :func:`import_images` works through its candidates a chunk at a time, so memory stays
flat however many images there are. What it cannot use is skipped with one line naming the file and the reason
(``not an image``, ``truncated``, ``too many pixels``, ``unreadable``, ...); nothing raises for a bad file.

Resumable by construction: a chunk's images are written (atomically, named by their hash) before its rows, and its
rows (items, and their labels for a labelled import) go in one transaction. A run killed anywhere leaves, at worst,
image files without rows, which the next run finds in place; the next run skips every image whose content is
already an item (counted as a duplicate) and imports exactly the rest.

Layouts: a folder imported ``labelled`` is read as ``<class>/<image>`` (any depth below the class folder); its
items are labelled with ``source: import`` in the ``seed`` split, or in ``holdout``.

While an import runs it says so in the store (:func:`import_running`, a heartbeat per chunk), from whichever process
runs it: the review queue waits for it, so the holdout is drawn and the first picks are made over the whole folder,
not over the chunks that happened to arrive first (a folder sorted by class would give the first picks to the first
classes). When it ends the store records it, and the scheduler refreshes the queue (:func:`pool_grew_since_refresh`).
"""

from __future__ import annotations

import logging
import os
import tarfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import IO, Callable, Iterable, Iterator, Sequence

from annotation.errors import AnnotationError
from app.core.uploads import Upload, check_upload, items_for_uploads, store_image
from app.store import NewItem, NewLabel, Store, utcnow
from learner.errors import ImageDecodeError, ImageError, ImageTooLargeError
from learner.images import ImageSource

logger = logging.getLogger(__name__)

#: Label source of imported labels.
IMPORT_SOURCE = "import"
#: A text file given on the command line with one of these suffixes is a list of paths or URLs, one a line.
LIST_SUFFIXES = (".txt", ".lst", ".list")
#: Images per chunk (one store transaction, one call to the embedder) and encoded bytes per chunk at most.
CHUNK_IMAGES = 128
CHUNK_BYTES = 256 * 1024 * 1024
#: Threads writing a chunk's image files (their fsyncs overlap: 8 wrote 384 files 15x faster than 1 here).
WRITERS = 8
#: The size a check decode runs at when nothing is embedded (JPEG decodes at 1/8 scale for it).
CHECK_SIZE = (32, 32)
#: Store meta: ``{"running": bool, "heartbeat": ISO time, "finished": ISO time}`` of the newest import.
IMPORT_STATE = "import"
#: Store meta: when the review queue was last refreshed (ISO time).
QUEUE_REFRESHED = "queue-refreshed-at"
#: An import whose heartbeat is older than this was killed: the queue stops waiting for it.
IMPORT_STALE_S = 120.0


class Unreadable(Exception):
    """A candidate's bytes cannot be had: a file that cannot be read, a URL that cannot be fetched, too large."""


@dataclass(frozen=True)
class Candidate:
    """One image to import: its name (path or URL, for the summary), its class when labelled, how to read it."""

    name: str
    read: Callable[[], bytes]
    label: str | None = None


@dataclass(frozen=True)
class Skipped:
    """A file not imported: its name, a short reason (``not an image``, ``truncated``, ...) and the details."""

    name: str
    reason: str
    detail: str = ""

    def line(self) -> str:
        """One line for the summary."""
        return f"{self.name}: {self.reason}" + (f" ({self.detail})" if self.detail and self.detail != self.reason else "")


@dataclass
class ImportSummary:
    """What an import did: new items, images already there (or seen twice), and each file skipped with its reason."""

    imported: int = 0
    duplicates: int = 0
    skipped: list[Skipped] = field(default_factory=list)
    labels: dict[str, int] = field(default_factory=dict)  # class -> items imported with that label

    @property
    def seen(self) -> int:
        """Files looked at."""
        return self.imported + self.duplicates + len(self.skipped)

    def skip_counts(self) -> dict[str, int]:
        """Skipped files per reason."""
        counts: dict[str, int] = {}
        for skipped in self.skipped:
            counts[skipped.reason] = counts.get(skipped.reason, 0) + 1
        return counts

    def to_dict(self) -> dict[str, object]:
        """The summary as JSON (the bulk route's answer)."""
        return {
            "imported": self.imported,
            "duplicates": self.duplicates,
            "skipped": [{"name": s.name, "reason": s.reason, "detail": s.detail} for s in self.skipped],
            "skipped_by_reason": self.skip_counts(),
            "labels": dict(self.labels),
        }

    def lines(self) -> list[str]:
        """The summary for people: totals, then one line per file skipped."""
        head = f"imported {self.imported}, duplicates {self.duplicates}, skipped {len(self.skipped)}"
        if self.skipped:
            head += " (" + ", ".join(f"{reason}: {n}" for reason, n in sorted(self.skip_counts().items())) + ")"
        out = [head]
        if self.labels:
            out.append("labelled: " + ", ".join(f"{name} {n}" for name, n in sorted(self.labels.items())))
        out += [f"  skipped {skipped.line()}" for skipped in self.skipped]
        return out


def reason_of(error: Exception) -> str:
    """The summary's short reason for an image error."""
    if isinstance(error, ImageTooLargeError):
        return "too many pixels"
    if isinstance(error, ImageDecodeError):
        text = error.reason if isinstance(error, ImageError) else str(error)
        if "truncated" in text:
            return "truncated"
        if "not an image" in text or "empty" in text or "unsupported image format" in text:
            return "not an image"
    return "unreadable"


# -- what to import -----------------------------------------------------------------------------------
def is_url(text: str) -> bool:
    """Whether ``text`` is an http(s) URL."""
    return text.lower().startswith(("http://", "https://"))


def file_reader(path: Path, max_bytes: int) -> Callable[[], bytes]:
    """Read ``path`` when asked: :class:`Unreadable` when it cannot be read or is over ``max_bytes``."""

    def read() -> bytes:
        try:
            with open(path, "rb") as handle:
                data = handle.read(max_bytes + 1)
        except OSError as exc:
            raise Unreadable(exc.strerror or str(exc)) from exc
        if len(data) > max_bytes:
            raise Unreadable(f"the file is over the limit of {max_bytes:,} bytes")
        return data

    return read


def walk(
    paths: Iterable[str | Path],
    *,
    labelled: bool = False,
    max_bytes: int,
    fetch: Callable[[str], bytes] | None = None,
) -> Iterator[Candidate | Skipped]:
    """The candidates of ``paths`` in a stable order (folders recursively, sorted; symlink loops visited once),
    or a :class:`Skipped` for what cannot be a candidate (a missing path, a file outside a class folder when
    ``labelled``). A path ending in ``.txt``/``.lst``/``.list`` is a list of paths or URLs, one a line (``#``
    comments; relative paths from the list's folder); URLs are read with ``fetch``."""
    visited: set[tuple[int, int]] = set()
    for path in paths:
        yield from _walk_one(str(path), labelled=labelled, max_bytes=max_bytes, fetch=fetch, visited=visited, base=None)


def _walk_one(
    text: str, *, labelled: bool, max_bytes: int, fetch: Callable[[str], bytes] | None,
    visited: set[tuple[int, int]], base: Path | None,
) -> Iterator[Candidate | Skipped]:  # fmt: skip
    if is_url(text):
        if labelled:
            yield Skipped(text, "no class", "a labelled import takes folders laid out <class>/<image>")
        elif fetch is None:
            yield Skipped(text, "unreadable", "URLs cannot be fetched here")
        else:
            yield Candidate(text, _url_reader(text, fetch))
        return
    path = Path(text) if base is None or Path(text).is_absolute() else base / text
    if path.is_dir():
        yield from _walk_folder(path, labelled=labelled, max_bytes=max_bytes, visited=visited)
    elif base is None and path.suffix.lower() in LIST_SUFFIXES and path.is_file():
        yield from _walk_list(path, labelled=labelled, max_bytes=max_bytes, fetch=fetch, visited=visited)
    elif path.exists() or path.is_symlink():
        if labelled:
            yield Skipped(str(path), "no class", "a labelled import takes folders laid out <class>/<image>")
        else:
            yield Candidate(str(path), file_reader(path, max_bytes))
    else:
        yield Skipped(str(path), "unreadable", "no such file or folder")


def _url_reader(url: str, fetch: Callable[[str], bytes]) -> Callable[[], bytes]:
    def read() -> bytes:
        try:
            return fetch(url)
        except AnnotationError as exc:
            raise Unreadable(str(exc)) from exc

    return read


def _walk_list(
    path: Path, *, labelled: bool, max_bytes: int, fetch: Callable[[str], bytes] | None, visited: set[tuple[int, int]]
) -> Iterator[Candidate | Skipped]:
    try:
        handle = open(path, encoding="utf-8", errors="replace")
    except OSError as exc:
        yield Skipped(str(path), "unreadable", exc.strerror or str(exc))
        return
    with handle:
        for line in handle:  # streamed: a list of a million lines is never held
            entry = line.strip()
            if entry and not entry.startswith("#"):
                yield from _walk_one(entry, labelled=labelled, max_bytes=max_bytes, fetch=fetch, visited=visited,
                                     base=path.parent)


def _walk_folder(root: Path, *, labelled: bool, max_bytes: int, visited: set[tuple[int, int]]) -> Iterator[Candidate | Skipped]:
    def refused(error: OSError) -> None:
        logger.warning("cannot list %s: %s", error.filename, error.strerror)

    for folder, dirnames, filenames in os.walk(root, followlinks=True, onerror=refused):
        try:
            info = os.stat(folder)
        except OSError:
            continue
        key = (info.st_dev, info.st_ino)
        if key in visited:  # a symlink loop, or a folder reached twice: its files are listed once
            dirnames[:] = []
            continue
        visited.add(key)
        dirnames.sort()
        here = Path(folder)
        parts = here.relative_to(root).parts
        for name in sorted(filenames):
            path = here / name
            if labelled and not parts:
                yield Skipped(str(path), "no class", "a labelled import takes folders laid out <class>/<image>")
                continue
            yield Candidate(str(path), file_reader(path, max_bytes), label=parts[0] if labelled else None)


def open_tar(stream: IO[bytes]) -> tarfile.TarFile:
    """A tar (plain or compressed) read as a stream: nothing is held but the member being read; ``tarfile.ReadError``
    when ``stream`` is no tar."""
    return tarfile.open(fileobj=stream, mode="r|*")


def tar_candidates(archive: tarfile.TarFile, *, labelled: bool, max_bytes: int) -> Iterator[Candidate | Skipped]:
    """The regular files of a streamed tar as candidates, each read as it comes (over ``max_bytes``: skipped unread);
    when ``labelled``, members are named ``<class>/<image>``. A tar cut short ends with one skipped line."""
    members = iter(archive)
    while True:
        try:
            member = next(members)
        except StopIteration:
            return
        except (tarfile.TarError, EOFError, OSError) as exc:
            yield Skipped("<tar>", "truncated", f"the archive ends early or is damaged ({exc})")
            return
        if member.isdir():
            continue
        parts = [part for part in member.name.split("/") if part not in ("", ".")]
        name = "/".join(parts)
        if not member.isfile():
            yield Skipped(name, "not an image", "not a regular file (a link or device)")
            continue
        if labelled and len(parts) < 2:
            yield Skipped(name, "no class", "a labelled import takes members named <class>/<image>")
            continue
        if member.size > max_bytes:
            yield Skipped(name, "unreadable", f"the file is over the limit of {max_bytes:,} bytes")
            continue
        try:
            handle = archive.extractfile(member)
            data = handle.read() if handle is not None else b""
        except (tarfile.TarError, EOFError, OSError) as exc:
            yield Skipped(name, "truncated", f"the archive ends inside this file ({exc})")
            return
        yield Candidate(name, lambda data=data: data, label=parts[0] if labelled else None)


# -- the import ---------------------------------------------------------------------------------------
def chunked(candidates: Iterable[Candidate | Skipped], summary: ImportSummary, on_done: Callable[[int], None],
            ) -> Iterator[list[tuple[Candidate, bytes]]]:  # fmt: skip
    """Candidates read into chunks of at most :data:`CHUNK_IMAGES` images and :data:`CHUNK_BYTES` bytes; what
    cannot be read is added to ``summary`` as skipped."""
    chunk: list[tuple[Candidate, bytes]] = []
    size = 0
    for candidate in candidates:
        if isinstance(candidate, Skipped):
            summary.skipped.append(candidate)
            on_done(1)
            continue
        try:
            data = candidate.read()
        except Unreadable as exc:
            summary.skipped.append(Skipped(candidate.name, "unreadable", str(exc)))
            on_done(1)
            continue
        chunk.append((candidate, data))
        size += len(data)
        if len(chunk) >= CHUNK_IMAGES or size >= CHUNK_BYTES:
            yield chunk
            chunk, size = [], 0
    if chunk:
        yield chunk


def import_images(
    candidates: Iterable[Candidate | Skipped],
    *,
    store: Store,
    data_dir: Path,
    max_pixels: int,
    embed: Callable[[Sequence[ImageSource]], object] | None,
    split: str = "pool",
    classes: Sequence[str] | None = None,
    on_done: Callable[[int], None] = lambda n: None,
) -> ImportSummary:
    """Import ``candidates`` (see the module docstring); ``embed(sources)`` embeds through the cache (raising an
    ImageError naming a source that cannot be decoded), None checks each image with a small decode instead.
    Labelled candidates need ``split`` ``seed`` or ``holdout``; a class outside ``classes`` (when given) is
    skipped. ``on_done(n)`` is told of every n files finished (a progress bar)."""
    summary = ImportSummary()
    _import_state(store, running=True)
    try:
        for chunk in chunked(candidates, summary, on_done):
            _import_chunk(chunk, summary, store=store, data_dir=data_dir, max_pixels=max_pixels, embed=embed, split=split,
                          classes=classes)  # fmt: skip
            on_done(len(chunk))
            _import_state(store, running=True)
    finally:
        _import_state(store, running=False)
    return summary


def _import_state(store: Store, running: bool) -> None:
    now = utcnow().isoformat()
    state = dict(store.get_meta(IMPORT_STATE) or {})
    state.update(running=running, heartbeat=now, **({} if running else {"finished": now}))
    store.set_meta(IMPORT_STATE, state)


def import_running(store: Store, stale_s: float = IMPORT_STALE_S) -> bool:
    """Whether an import (in any process) is under way: running, with a heartbeat younger than ``stale_s``."""
    state = store.get_meta(IMPORT_STATE) or {}
    if not state.get("running"):
        return False
    return (utcnow() - datetime.fromisoformat(state["heartbeat"])).total_seconds() < stale_s


def mark_queue_refreshed(store: Store) -> None:
    """Record that the review queue was refreshed over the pool as it is now."""
    store.set_meta(QUEUE_REFRESHED, utcnow().isoformat())


def pool_grew_since_refresh(store: Store) -> bool:
    """Whether an import finished after the review queue was last refreshed (so the queue has not seen its items)."""
    finished = (store.get_meta(IMPORT_STATE) or {}).get("finished")
    refreshed = store.get_meta(QUEUE_REFRESHED)
    return finished is not None and (refreshed is None or datetime.fromisoformat(finished) > datetime.fromisoformat(refreshed))


def _import_chunk(
    chunk: list[tuple[Candidate, bytes]], summary: ImportSummary, *, store: Store, data_dir: Path, max_pixels: int,
    embed: Callable[[Sequence[ImageSource]], object] | None, split: str, classes: Sequence[str] | None,
) -> None:  # fmt: skip
    uploads: list[tuple[Upload, Candidate]] = []
    for candidate, data in chunk:
        if classes is not None and candidate.label is not None and candidate.label not in classes:
            summary.skipped.append(Skipped(candidate.name, "unknown class",
                                           f"{candidate.label!r} is not one of {', '.join(classes)}: add it to "
                                           "service.classes, then import again"))  # fmt: skip
            continue
        try:
            uploads.append((check_upload(data, candidate.name, max_pixels), candidate))
        except ImageError as exc:
            summary.skipped.append(Skipped(candidate.name, reason_of(exc), exc.reason))
    uploads = _decoded(uploads, summary, embed)
    if not uploads:
        return
    _write_new_images(store, data_dir, [upload for upload, _ in uploads])
    new_items: dict[str, NewItem] = {}
    resolved = items_for_uploads(store, data_dir, [upload for upload, _ in uploads], split, new_items)
    new_labels = [
        NewLabel(item_id, candidate.label, IMPORT_SOURCE)
        for (item_id, created), (_, candidate) in zip(resolved, uploads)
        if created and candidate.label is not None
    ]
    inserted = set(store.add_items_with_labels(list(new_items.values()), new_labels))
    for (item_id, created), (_, candidate) in zip(resolved, uploads):
        if created and item_id in inserted:
            summary.imported += 1
            inserted.discard(item_id)
            if candidate.label is not None:
                summary.labels[candidate.label] = summary.labels.get(candidate.label, 0) + 1
        else:
            summary.duplicates += 1


def _write_new_images(store: Store, data_dir: Path, uploads: list[Upload]) -> None:
    """Write the chunk's new images (atomically and durably, each once) on :data:`WRITERS` threads, before their rows.

    Each write waits on two fsyncs (the file, then its folder); one after another they cost an import as much as
    an eighth of its embedding (measured by ``benchmarks/import_speed.py``), while concurrent ones share the disk's
    journal commits. :func:`items_for_uploads` then finds the files in place and writes nothing more.
    """
    known = store.item_ids_by_hash([upload.content_hash for upload in uploads])
    todo = {upload.content_hash: upload for upload in uploads if upload.content_hash not in known}
    if not todo:
        return
    with ThreadPoolExecutor(max_workers=min(WRITERS, len(todo)), thread_name_prefix="juicer-import-write") as pool:
        list(pool.map(lambda upload: store_image(data_dir, upload), todo.values()))


def _decoded(
    uploads: list[tuple[Upload, Candidate]], summary: ImportSummary, embed: Callable[[Sequence[ImageSource]], object] | None
) -> list[tuple[Upload, Candidate]]:
    """The uploads whose image decodes (embedded through the cache when ``embed`` is given); the rest skipped."""
    if embed is None:
        kept = []
        for upload, candidate in uploads:
            try:
                upload.image.pixels(CHECK_SIZE)
            except ImageError as exc:
                summary.skipped.append(Skipped(candidate.name, reason_of(exc), exc.reason))
            else:
                kept.append((upload, candidate))
        return kept
    remaining = list(uploads)
    while remaining:
        try:
            embed([upload.image for upload, _ in remaining])
            return remaining
        except ImageError as exc:
            # The batches before the failing image stay cached: the retry embeds only what is left after it.
            bad = [(upload, candidate) for upload, candidate in remaining if upload.image.source == exc.source]
            if not bad:
                raise
            for _, candidate in bad:
                summary.skipped.append(Skipped(candidate.name, reason_of(exc), exc.reason))
            remaining = [pair for pair in remaining if pair[0].image.source != exc.source]
    return remaining
