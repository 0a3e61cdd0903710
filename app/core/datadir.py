"""The data folder: what Label Studio may see of it, the move from the old layout, and who may read what.

Layout of ``<data_dir>``::

    files/images/<sha256>.<ext>   every image (uploads, the demo); ``files/`` is Label Studio's
                                  LOCAL_FILES_DOCUMENT_ROOT, so a local-files storage (any project member may add
                                  one) reaches images and nothing else
    juicer.db  secrets/  models/  embeddings/  label-studio/  backbones/ ...   beside it, out of Label Studio's reach

A store row's ``image_path`` (``images/<sha256>.<ext>``) is relative to ``files/``, which makes it the very path of
Label Studio's task URLs (``/data/local-files/?d=images/...``); :func:`image_file` is the one way a row finds its
file. Data folders from before this layout kept their images in ``<data_dir>/images`` and gave Label Studio the
whole data folder as its document root: :func:`move_images` moves them (rows and task URLs stay as they are).

Modes: :func:`prepare_data_dir` runs first in every process that starts juicer (``juicer serve``, ``juicer
labelstudio``, the gunicorn server). It sets the umask to 077, so what juicer creates from then on (the store and its
-wal/-shm, models, embeddings) is 0600/0700, and tightens what an older data folder left 0644/0755. An image is as
readable as its folder (:func:`write_image`): the folder is 0700 unless ``label_studio.images_group_readable``
lets the data folder's group read images (and pass through the folders above them, 0710/0750), for a Label Studio
that runs as another user in that group (compose.yaml); everything else stays juicer's user's alone.
"""

from __future__ import annotations

import filecmp
import logging
import os
import stat
from pathlib import Path

from app.core.files import fsync_dir, write_atomic
from config import Settings
from config.settings import files_dir

logger = logging.getLogger(__name__)

#: Set at start: files 0600, folders 0700, for everything juicer and the Label Studio it runs create.
PRIVATE_UMASK = 0o077
#: Where images lived before ``files/`` (relative to the data folder).
OLD_IMAGES = "images"
IMAGES = "images"


def image_file(data_dir: str | Path, image_path: str) -> Path:
    """The file of a store row's ``image_path`` (``images/<sha256>.<ext>``, relative to ``<data_dir>/files``)."""
    return files_dir(data_dir) / image_path


def write_image(data_dir: str | Path, content_hash: str, extension: str, data: bytes) -> str:
    """Write an image once (atomically) as ``images/<content_hash>.<extension>``; returns that ``image_path``.

    The file gets its folder's read and write bits (0700 -> 0600, 0750 -> 0640): whoever may list the images
    folder may read its images, nobody else.
    """
    relative = f"{IMAGES}/{content_hash}.{extension}"
    path = image_file(data_dir, relative)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, data, mode=stat.S_IMODE(path.parent.stat().st_mode) & 0o666)
    return relative


def move_images(data_dir: str | Path) -> bool:
    """Move an old ``<data_dir>/images`` to ``<data_dir>/files/images``; True when there was one.

    One rename of the folder when ``files/images`` is absent or empty (atomic), else image by image (each rename
    atomic; a name already in ``files/images`` holds the same bytes, names being content hashes, so the old copy
    goes once compared). At every moment each image is in one folder or the other, so a move killed anywhere loses
    nothing and the next start finishes it; a second run finds nothing to do.
    """
    data_dir = Path(data_dir)
    old, new = data_dir / OLD_IMAGES, files_dir(data_dir) / IMAGES
    if not old.is_dir():
        return False
    new.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        os.rename(old, new)  # POSIX: replaces an empty folder (a Label Studio started first makes one)
    except OSError:
        _move_each(old, new)
    fsync_dir(new.parent)
    fsync_dir(data_dir)
    logger.info("moved the images of %s into %s, out of reach of everything else Label Studio could serve", old, new)
    return True


def _move_each(old: Path, new: Path) -> None:
    for entry in sorted(old.iterdir()):
        target = new / entry.name
        if not target.exists():
            os.rename(entry, target)
        elif entry.is_file() and target.is_file() and filecmp.cmp(entry, target, shallow=False):
            entry.unlink()
        else:
            logger.warning("%s differs from %s: left where it is", entry, target)
    fsync_dir(new)
    try:
        old.rmdir()
    except OSError:
        logger.warning("%s is not empty after the move (see the warnings above): left in place", old)
    fsync_dir(old.parent)


def tighten_modes(settings: Settings) -> list[Path]:
    """chmod what an older data folder left readable by others; returns the paths whose mode changed.

    The data folder 0700, ``files/`` and ``files/images`` 0700 (0710/0750/0750 when the group reads images), every
    other file 0600 and folder 0700 at its top level (a folder's own mode keeps others out of what it holds), and
    Label Studio's data folder and database wherever they are. Symbolic links are left alone (they may lead out of
    the data folder).
    """
    data_dir = Path(settings.data_dir)
    group = settings.label_studio.images_group_readable
    folder = 0o750 if group else 0o700
    wanted: dict[Path, int] = {data_dir: 0o710 if group else 0o700, settings.files_dir: folder, settings.images_dir: folder}
    if data_dir.is_dir():
        for entry in data_dir.iterdir():
            if entry.name != settings.files_dir.name:
                wanted.setdefault(entry, 0o700 if entry.is_dir() else 0o600)
    studio = Path(settings.label_studio.data_dir or data_dir / "label-studio")
    wanted.setdefault(studio, 0o700)
    wanted.setdefault(studio / "label_studio.sqlite3", 0o600)
    changed = []
    for path, mode in wanted.items():
        try:
            info = path.lstat()
        except FileNotFoundError:
            continue
        if stat.S_ISLNK(info.st_mode) or stat.S_IMODE(info.st_mode) == mode:
            continue
        try:
            os.chmod(path, mode)
        except PermissionError as exc:
            logger.warning("cannot make %s private (%s): change its mode to %o by hand", path, exc, mode)
            continue
        changed.append(path)
    return changed


def prepare_data_dir(settings: Settings) -> None:
    """What every start runs first: the private umask, the old images folder moved, old modes tightened."""
    os.umask(PRIVATE_UMASK)
    data_dir = Path(settings.data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    move_images(data_dir)
    for path in tighten_modes(settings):
        logger.info("made %s private", path)
