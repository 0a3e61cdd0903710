"""The data folder: Label Studio's document root holds the images only, an old folder is moved on start, files are private."""

from __future__ import annotations

import os
import sqlite3
import stat
from pathlib import Path

import pytest

from annotation.launcher import document_root
from app.core import datadir
from app.core.datadir import image_file, move_images, prepare_data_dir, write_image
from app.store import Store
from config import load_settings

OLD_SCHEMA = Path(__file__).parents[2] / "fixtures" / "juicer-db-main-2026-12-01.sql"
HASHES = ("a" * 64, "b" * 64, "c" * 64)  # the image names the dump's rows give (images/<hash>.png)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture(autouse=True)
def umask_restored():
    """prepare_data_dir sets the process umask, as a start does: give the test process its own back."""
    before = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(before)


def old_data_folder(root: Path, n_extra: int = 5) -> tuple[Path, dict[str, bytes]]:
    """A data folder as main left it before files/: images/ beside the store, secrets and Label Studio's data, 0644."""
    folder = root / "old"
    (folder / "images").mkdir(parents=True)
    connection = sqlite3.connect(folder / "juicer.db")
    connection.executescript(OLD_SCHEMA.read_text())
    connection.close()
    images = {f"images/{h}.png": f"png {h[0]}".encode() for h in HASHES}
    images |= {f"images/{i:064x}.jpg": f"jpeg {i}".encode() for i in range(n_extra)}  # uploads with no row here
    for relative, data in images.items():
        (folder / relative).write_bytes(data)
    (folder / "secrets").mkdir(mode=0o700)
    (folder / "secrets" / "webhook-secret").write_text("s3cret-value\n")
    (folder / "label-studio").mkdir()
    (folder / "label-studio" / "label_studio.sqlite3").write_bytes(b"SQLite format 3\0")
    (folder / "models").mkdir()
    (folder / "models" / "v0001.pkl").write_bytes(b"head")
    for path in [folder, *folder.rglob("*")]:
        if path.name != "secrets" and path.parent.name != "secrets":
            os.chmod(path, 0o755 if path.is_dir() else 0o644)
    return folder, images


def settings_for(folder: Path, **label_studio):
    return load_settings(environ={}, data_dir=folder, label_studio=label_studio)


def assert_every_image_is_served_and_found(folder: Path, images: dict[str, bytes]) -> None:
    settings = settings_for(folder)
    root = document_root(settings.images_dir)
    assert root == settings.files_dir.resolve() and sorted(p.name for p in root.iterdir()) == ["images"]
    for relative, data in images.items():
        # Label Studio's existing task URLs (/data/local-files/?d=images/<hash>.<ext>) resolve under its document root
        assert (root / relative).read_bytes() == data
    store = Store.open(folder)
    try:
        for item in [row for split in ("seed", "pool", "holdout") for row in store.items_of_split(split)]:
            assert image_file(folder, item.image_path).read_bytes() == images[item.image_path]  # rows unchanged
    finally:
        store.close()
    assert not (folder / "images").exists()


def test_an_old_data_folder_is_moved_so_label_studio_sees_the_images_and_nothing_else(tmp_path):
    folder, images = old_data_folder(tmp_path)
    prepare_data_dir(settings_for(folder))
    assert_every_image_is_served_and_found(folder, images)
    assert (folder / "secrets" / "webhook-secret").read_text() == "s3cret-value\n"  # beside files/, not under it
    prepare_data_dir(settings_for(folder))  # a second start finds nothing to move and loses nothing
    assert_every_image_is_served_and_found(folder, images)


def test_a_move_killed_halfway_loses_nothing_and_the_next_start_finishes_it(tmp_path, monkeypatch):
    folder, images = old_data_folder(tmp_path)
    new = folder / "files" / "images"
    new.mkdir(parents=True)  # a Label Studio started first made it; an upload already landed in it
    (new / f"{HASHES[0]}.png").write_bytes(images[f"images/{HASHES[0]}.png"])
    renames, rename = [], os.rename

    def killed_after_three(source, target):
        if len(renames) == 3:
            raise KeyboardInterrupt("killed")
        rename(source, target)
        renames.append(source)

    monkeypatch.setattr(datadir.os, "rename", killed_after_three)
    with pytest.raises(KeyboardInterrupt):
        move_images(folder)
    halfway = {p.name for p in (folder / "images").iterdir()} | {p.name for p in new.iterdir()}
    assert halfway == {Path(relative).name for relative in images}  # every image in one folder or the other
    assert len(renames) == 3 and (folder / "images").exists()
    monkeypatch.undo()
    prepare_data_dir(settings_for(folder))
    assert_every_image_is_served_and_found(folder, images)


def test_a_file_that_differs_from_its_namesake_is_left_in_the_old_folder(tmp_path):
    folder, images = old_data_folder(tmp_path, n_extra=0)
    new = folder / "files" / "images"
    new.mkdir(parents=True)
    (new / f"{HASHES[1]}.png").write_bytes(b"something else")
    assert move_images(folder)
    assert (folder / "images" / f"{HASHES[1]}.png").read_bytes() == images[f"images/{HASHES[1]}.png"]  # not lost
    assert {p.name for p in new.iterdir()} == {f"{h}.png" for h in HASHES}
    assert not move_images(tmp_path / "fresh")  # nothing to move in a fresh folder


def test_start_makes_the_store_models_and_label_studio_private(tmp_path):
    folder, _ = old_data_folder(tmp_path)
    prepare_data_dir(settings_for(folder))
    assert mode(folder) == 0o700
    assert mode(folder / "files") == mode(folder / "files" / "images") == 0o700
    assert mode(folder / "juicer.db") == 0o600 and mode(folder / "models") == 0o700
    assert mode(folder / "label-studio") == 0o700 and mode(folder / "label-studio" / "label_studio.sqlite3") == 0o600
    assert mode(folder / "secrets") == 0o700
    # what is created from now on is private: the store with its -wal and -shm, new images, new folders
    store = Store.open(folder)
    try:
        store.set_meta("touched", True)
        for name in ("juicer.db", "juicer.db-wal", "juicer.db-shm"):
            assert mode(folder / name) == 0o600, name
    finally:
        store.close()
    assert mode(image_file(folder, write_image(folder, "d" * 64, "png", b"png"))) == 0o600
    (folder / "embeddings").mkdir()
    assert mode(folder / "embeddings") == 0o700


def test_images_readable_by_the_group_when_label_studio_runs_as_another_user(tmp_path):
    folder, _ = old_data_folder(tmp_path)
    prepare_data_dir(settings_for(folder, images_group_readable=True))
    assert mode(folder) == 0o710  # the group may pass through to files/, not list the data folder
    assert mode(folder / "files") == mode(folder / "files" / "images") == 0o750
    assert mode(image_file(folder, write_image(folder, "e" * 64, "png", b"png"))) == 0o640
    assert mode(folder / "juicer.db") == 0o600 and mode(folder / "models") == 0o700  # the rest stays private


def test_symbolic_links_in_the_data_folder_are_not_followed(tmp_path):
    shared = tmp_path / "shared-embeddings"
    shared.mkdir(mode=0o755)
    folder = tmp_path / "data"
    folder.mkdir()
    (folder / "embeddings").symlink_to(shared, target_is_directory=True)
    prepare_data_dir(settings_for(folder))
    assert mode(shared) == 0o755
