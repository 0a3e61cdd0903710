import os
import stat

import pytest

from app.core.files import TEMP_SUFFIX, write_atomic


def test_write_atomic_creates_folders_and_sets_the_mode(tmp_path):
    path = write_atomic(tmp_path / "a" / "b.bin", b"data", mode=0o644)
    assert path.read_bytes() == b"data"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o644
    assert [p.name for p in path.parent.iterdir()] == ["b.bin"]


def test_a_failed_write_keeps_the_old_content_and_leaves_no_temp_file(tmp_path, monkeypatch):
    target = write_atomic(tmp_path / "model.pkl", b"old")

    def broken_fsync(descriptor):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", broken_fsync)
    with pytest.raises(OSError, match="No space"):
        write_atomic(target, b"new")
    assert target.read_bytes() == b"old"
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(TEMP_SUFFIX)]
