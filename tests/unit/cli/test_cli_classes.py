"""``juicer classes``: it writes the store and Label Studio's project through the same functions as the API."""

from __future__ import annotations

from typing import Any

import pytest

from annotation.errors import ProjectConfigError
from annotation.models import Project
from app.cli import main as cli
from app.store import Store
from config import load_settings


class RecordingDesk:
    """Label Studio's project as ``ensure_project`` leaves it; refuses to drop a choice in ``annotated``."""

    def __init__(self) -> None:
        self.classes: tuple[str, ...] = ()
        self.annotated: set[str] = set()

    def ensure_project(self, classes: Any, title: str) -> Project:
        dropped = [c for c in self.classes if c not in classes]
        if set(dropped) & self.annotated:
            raise ProjectConfigError(f"project {title!r} has labels for {dropped}")
        self.classes = tuple(c for c in self.classes if c in classes) + tuple(c for c in classes if c not in self.classes)
        return Project(7, title, self.classes, "http://ls/projects/7")

    def __enter__(self) -> "RecordingDesk":
        return self

    def __exit__(self, *exc: object) -> None:
        pass


@pytest.fixture
def settings(tmp_path):
    return load_settings(environ={}, data_dir=tmp_path, service={"classes": ["cat", "dog"]},
                         label_studio={"url": "http://127.0.0.1:1", "token": "ls-token-for-tests", "timeout_s": 2})  # fmt: skip


@pytest.fixture
def desk(monkeypatch):
    desk = RecordingDesk()
    monkeypatch.setattr("annotation.desk.desk_from_settings", lambda settings: desk)
    return desk


def juicer(settings, *argv: str) -> int:
    args = cli.build_parser().parse_args(["classes", *argv])
    return args.run(args, settings)


def test_add_writes_the_store_and_the_project_and_list_marks_it(settings, desk, tmp_path, capsys):
    assert juicer(settings, "add", "bird") == 0
    out = capsys.readouterr().out
    assert "added 'bird'" in out and "cat, dog, bird" in out
    assert desk.classes == ("cat", "dog", "bird")
    store = Store.from_settings(settings)
    assert store.stored_classes() == ("cat", "dog", "bird") and store.added_classes() == ("bird",)
    store.close()
    assert juicer(settings, "add", "bird") == 0 and "is a class already" in capsys.readouterr().out
    assert juicer(settings, "list") == 0
    assert capsys.readouterr().out.splitlines() == ["cat", "dog", "bird  (added at run time)"]


def test_label_studio_away_stores_the_class_and_says_when_the_project_gets_it(settings, capsys):
    assert juicer(settings, "add", "bird") == 0
    assert "Label Studio did not take it yet" in capsys.readouterr().out
    store = Store.from_settings(settings)
    assert store.stored_classes() == ("cat", "dog", "bird")
    store.close()


def test_rename_and_retire_an_unused_class_refuse_one_in_use(settings, desk, capsys):
    assert juicer(settings, "add", "brid") == 0
    assert juicer(settings, "rename", "brid", "bird") == 0 and desk.classes == ("cat", "dog", "bird")
    desk.annotated.add("bird")
    assert juicer(settings, "retire", "bird") == 1
    assert "annotations choosing 'bird'" in capsys.readouterr().err
    assert juicer(settings, "retire", "cat") == 1
    err = capsys.readouterr().err
    assert "configured class list" in err and "relabel" in err
    desk.annotated.clear()
    assert juicer(settings, "retire", "bird") == 0 and desk.classes == ("cat", "dog")
    assert juicer(settings, "add", "  ") == 1 and "must not be empty" in capsys.readouterr().err
