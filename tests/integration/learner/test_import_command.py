"""``juicer import`` end to end: real photos (scikit-image's, cropped by scripts/make_photo_folder.py), the real
EfficientNet-Lite0 backbone, SIGKILLed mid-way and run again."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from app.store import Store
from config import load_settings
from learner.backbones import backbone_dir, ensure_backbone
from learner.cache import EmbeddingCache, embedding_cache_dir

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[3]
PER_CLASS = 30  # 10 classes: 300 photos, a little over two chunks of the import
KILL_DEADLINE_S = 600


@pytest.fixture
def data_dir(tmp_path) -> Path:
    """A fresh data folder (cold embedding cache) with the converted backbone linked in from the real one."""
    built, _ = ensure_backbone("efficientnet-lite0", load_settings().data_dir)
    data = tmp_path / "data"
    link = backbone_dir("efficientnet-lite0", data)
    link.parent.mkdir(parents=True)
    link.symlink_to(built.resolve(), target_is_directory=True)
    return data


@pytest.fixture
def photos(tmp_path) -> Path:
    folder = tmp_path / "photos"
    subprocess.run([sys.executable, str(REPO / "scripts" / "make_photo_folder.py"), str(folder), "--per-class", str(PER_CLASS)],
                   check=True, env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True)  # fmt: skip
    (folder / "README.txt").write_text("not a photo\n")
    good = next((folder / "cat").iterdir()).read_bytes()
    (folder / "cat" / "cut.jpg").write_bytes(good[: len(good) // 3])
    return folder


def juicer_import(data_dir: Path, folder: Path) -> subprocess.Popen:
    env = {**os.environ, "JUICER_DATA_DIR": str(data_dir), "JUICER_LEARNER__BACKBONE": "efficientnet-lite0"}
    return subprocess.Popen([sys.executable, "-m", "app.cli", "import", str(folder), "--no-progress"], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)  # fmt: skip


def count_items(data_dir: Path) -> int:
    try:
        with sqlite3.connect(f"file:{data_dir / 'juicer.db'}?mode=ro", uri=True, timeout=5) as conn:
            return conn.execute("SELECT count(*) FROM items").fetchone()[0]
    except sqlite3.Error:
        return 0  # not created, or not migrated yet


def test_import_killed_midway_then_resumed_imports_exactly_the_rest(data_dir, photos):
    n_photos = 10 * PER_CLASS
    first = juicer_import(data_dir, photos)
    deadline = time.monotonic() + KILL_DEADLINE_S
    while count_items(data_dir) == 0 and first.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert first.poll() is None, "the import ended before it could be killed:\n" + first.communicate()[0]
    first.send_signal(signal.SIGKILL)
    first.wait()
    registered = count_items(data_dir)
    assert 0 < registered < n_photos

    second = juicer_import(data_dir, photos)
    output = second.communicate(timeout=KILL_DEADLINE_S)[0]
    assert second.returncode == 0, output

    assert f"imported {n_photos - registered}, duplicates {registered}, skipped 2" in output
    assert "cut.jpg: truncated" in output and "README.txt: not an image" in output
    store = Store.open(data_dir)
    try:
        items = store.items_of_split("pool")
    finally:
        store.close()
    assert len(items) == n_photos == len({item.content_hash for item in items})
    image_files = sorted((data_dir / "files" / "images").iterdir())
    assert len(image_files) == n_photos  # no orphan: every file written before the kill has its row now
    from learner.backbones import resolve_backbone

    with EmbeddingCache(embedding_cache_dir(data_dir), resolve_backbone("efficientnet-lite0", data_dir).id) as cache:
        assert cache.missing([item.content_hash for item in items]) == []
