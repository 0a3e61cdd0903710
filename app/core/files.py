"""Files the service keeps under its data folder, written so that a crash never leaves half a file.

:func:`write_atomic` writes to a temporary name in the same folder, fsyncs it, renames it over the target
and fsyncs the folder, so the target is either absent, the old content or the whole new content, and a
row that names it may commit once it returns (POSIX rename; the folder must be on one filesystem).
Temporary names start with ``.`` and end in ``.tmp`` so a sweep can find the leftovers of a killed write.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

TEMP_SUFFIX = ".tmp"


def write_atomic(path: str | Path, data: bytes, *, mode: int | None = None) -> Path:
    """Write ``data`` to ``path`` atomically and durably (temp file, fsync, rename, fsync of the folder).

    ``mode`` sets the file's permission bits (``mkstemp`` creates it 0600).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TEMP_SUFFIX)
    try:
        with os.fdopen(handle, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        if mode is not None:
            os.chmod(temporary, mode)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)
    return path


def fsync_dir(folder: str | Path) -> None:
    """Make a rename or a new file in ``folder`` durable (a no-op where folders cannot be opened)."""
    try:
        descriptor = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


#: The folders under the data folder that :func:`write_atomic` writes into.
SWEPT_FOLDERS = ("files/images", "models", "secrets")


def sweep_temp_files(data_dir: str | Path, older_than_s: float = 300.0) -> list[Path]:
    """Remove the temporary files killed writes left under the data folder; returns what was removed.

    Only names :func:`write_atomic` makes (``.<name>.<random>.tmp``) older than ``older_than_s`` are removed, so a
    write in flight in another process (a second worker) is left alone.
    """
    import time

    removed = []
    cutoff = time.time() - older_than_s
    for name in SWEPT_FOLDERS:
        folder = Path(data_dir) / name
        if not folder.is_dir():
            continue
        for path in folder.glob(f".*{TEMP_SUFFIX}"):
            try:
                if path.is_file() and path.stat().st_mtime < cutoff:
                    path.unlink()
                    removed.append(path)
            except FileNotFoundError:
                continue
    return sorted(removed)
