"""The class list: the truth every process reads (meta ``classes``), the classes added at run time, and the change
of a class nobody used yet (a name mistyped when it was added)."""

from __future__ import annotations

import logging
from typing import Any, Sequence

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from app.store.base import StoreBase, StoreError, upsert
from app.store.schema import labels, meta, model_versions

logger = logging.getLogger(__name__)

CLASSES_KEY = "classes"  # meta: the service's class list, in order
CLASSES_ADDED_KEY = "classes_added"  # meta: the classes added at run time, in the order they came


class ClassInUseError(StoreError):
    """A class that labels or model versions name, or one from the configured list: it cannot be changed."""


class ClassesMixin(StoreBase):
    """The class list; each change is one serialised read-then-write, so two workers changing it at once both land."""

    def stored_classes(self) -> tuple[str, ...]:
        """The service's class list as stored (empty before the first start records one)."""
        return tuple(self.get_meta(CLASSES_KEY) or ())

    def added_classes(self) -> tuple[str, ...]:
        """The classes added at run time (:meth:`add_classes`) and still in the list, in the order they came."""
        stored = set(self.stored_classes())
        return tuple(name for name in self.get_meta(CLASSES_ADDED_KEY) or () if name in stored)

    def set_classes(self, names: Sequence[str]) -> None:
        """Record the class list resolved at start (:func:`app.services.resolve_classes`)."""
        self.set_meta(CLASSES_KEY, list(names))

    def add_classes(self, names: Sequence[str]) -> tuple[list[str], list[str]]:
        """Append ``names`` missing from the list, each recorded as added at run time.

        Returns (the whole list, those appended: empty when every name was there); :class:`StoreError` while no
        list is stored yet.
        """
        with self._serialised() as conn:
            stored, added = _read(conn)
            if not stored:
                raise StoreError("no class list is stored yet: start the service once with service.classes set")
            appended = [name for name in dict.fromkeys(names) if name not in stored]
            if appended:
                _write(conn, stored + appended, added + appended)
        return stored + appended, appended

    def change_class(self, name: str, new_name: str | None, dry_run: bool = False) -> list[str]:
        """Rename ``name`` to ``new_name`` in place, or retire it (``new_name`` None); returns the new list.

        Only a class added at run time that no label (of any split, withdrawn ones too) and no model version names:
        anything else is :class:`ClassInUseError` saying why, and nothing changes. ``dry_run``: check, change nothing.
        """
        with self._serialised() as conn:
            stored, added = _read(conn)
            if name not in stored:
                raise StoreError(f"{name!r} is not one of the classes")
            if new_name is not None and new_name in stored:
                raise ClassInUseError(f"{new_name!r} is a class already")
            if name not in added:
                raise ClassInUseError(f"{name!r} comes from the configured class list (service.classes), not from a run-time add")
            n_labels = conn.execute(sa.select(sa.func.count()).select_from(labels).where(labels.c.label == name)).scalar_one()
            if n_labels:
                raise ClassInUseError(f"{n_labels} label(s) name {name!r}")
            versions = [v for v, classes in conn.execute(sa.select(model_versions.c.version, model_versions.c.classes))
                        if name in (classes or ())]  # fmt: skip
            if versions:
                raise ClassInUseError(f"model version(s) {', '.join(versions[:5])} were trained with {name!r}")
            if new_name is None:
                changed, changed_added = [c for c in stored if c != name], [c for c in added if c != name]
            else:
                changed, changed_added = [new_name if c == name else c for c in stored], [new_name if c == name else c for c in added]
            if not dry_run:
                _write(conn, changed, changed_added)
        return changed


def _read(conn: Connection) -> tuple[list[str], list[str]]:
    """The list (its row locked on PostgreSQL; SQLite's BEGIN IMMEDIATE holds the whole database), then the added
    ones, read after the lock is held: a row another writer inserted meanwhile is seen."""
    classes: Any = conn.execute(sa.select(meta.c.value).where(meta.c.key == CLASSES_KEY).with_for_update()).scalar_one_or_none()
    added: Any = conn.execute(sa.select(meta.c.value).where(meta.c.key == CLASSES_ADDED_KEY)).scalar_one_or_none()
    return list(classes or []), list(added or [])


def _write(conn: Connection, classes: list[str], added: list[str]) -> None:
    upsert(conn, meta, {"key": CLASSES_KEY, "value": classes}, ["key"], ["value"])
    upsert(conn, meta, {"key": CLASSES_ADDED_KEY, "value": added}, ["key"], ["value"])
