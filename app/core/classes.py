"""Classes that grow: a class added at run time joins the store's list and juicer's Label Studio project.

The store's list (meta ``classes``) is the truth every process reads when it needs it
(:attr:`app.services.Services.classes`, :attr:`app.core.training.Trainer.classes`), so every gunicorn worker and
the scheduler see an added class at once; nothing is restarted. :func:`add_class` appends to the store first, then
appends the choice to juicer's Label Studio project through the SDK (existing annotations untouched; Label Studio
accepts a new choice, it refuses only removing one that annotations use). When Label Studio is away, the
scheduler's delivery job appends it later (:func:`follow_classes`). The head gains the class's row at the first
retrain with a label of it (:class:`learner.head.SoftmaxHead` ``warm_start`` keeps the known rows).

Renaming and retiring (:func:`change_class`) are supported for a class nobody used yet: one added at run time
that no label, no model version and no Label Studio annotation names (a name mistyped when it was added). Any
other class is refused (:class:`app.store.ClassInUseError`): labels, stored model versions and their reports
name it, and Label Studio refuses to drop a choice annotations use. :data:`IN_USE_ADVICE` says what to do instead.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence

from annotation.errors import AnnotationError, ProjectConfigError
from app.store import ClassInUseError, Store
from config.settings import check_class_names

if TYPE_CHECKING:  # the desk pulls in the SDK
    from annotation.desk import LabelStudioDesk
    from annotation.models import Project

logger = logging.getLogger(__name__)

#: How to add a class, for every message about a label outside the list.
HOW_TO_ADD = "add it with POST /v1/classes {\"name\": ...} or `juicer classes add NAME`"
#: What to do when a class in use cannot be renamed or retired.
IN_USE_ADVICE = (
    "only a class added at run time that no label, model version or Label Studio annotation names can be renamed "
    "or retired. To rename one in use, add the new name (POST /v1/classes or `juicer classes add NAME`) and relabel "
    "its items in Label Studio; to retire one, relabel its items: the name stays in the list, and once no current "
    "label names it the next version's head has no row for it and never predicts it"
)


@dataclass(frozen=True)
class ClassesAdded:
    """What :func:`add_class` did: the list now, the names it appended (none when all were there), and the
    Label Studio project holding them (None without a desk, or while Label Studio is away: ``label_studio_error``)."""

    classes: tuple[str, ...]
    added: tuple[str, ...]
    project: Project | None = None
    label_studio_error: str | None = None


def check_new_class(classes: Sequence[str], name: str) -> str:
    """``name`` stripped, by the one class-name rule (:func:`config.settings.check_class_names`); ValueError else."""
    cleaned = str(name).strip()
    if not cleaned:
        raise ValueError("a class name must not be empty")
    if classes and cleaned not in classes:
        check_class_names([*classes, cleaned])
    return cleaned


def add_class(store: Store, desk: LabelStudioDesk | None, project_title: str, name: str) -> ClassesAdded:
    """Append ``name`` to the store's class list and to juicer's Label Studio project (idempotent).

    ValueError for a name the class-name rule refuses; :class:`app.store.StoreError` while no list is stored.
    Label Studio's failure does not undo the store's change: it is reported in ``label_studio_error`` and the
    delivery job appends the choice once Label Studio answers.
    """
    cleaned = check_new_class(store.stored_classes(), name)
    classes, added = store.add_classes([cleaned])
    if added:
        logger.info("class %r added at run time; classes now %s", cleaned, classes)
    if desk is None:
        return ClassesAdded(tuple(classes), tuple(added))
    try:
        project = desk.ensure_project(list(classes), project_title)
    except AnnotationError as exc:
        logger.warning("class %r is stored; Label Studio's project gets it later: %s", cleaned, exc)
        return ClassesAdded(tuple(classes), tuple(added), None, str(exc))
    return ClassesAdded(tuple(classes), tuple(added), project)


def follow_classes(desk: LabelStudioDesk | None, project: Project | None, classes: Sequence[str], title: str) -> Project | None:
    """``project`` with the classes it lacks appended (when the store's list grew in another process); the same
    project while Label Studio is away (logged) or when nothing is missing."""
    if desk is None or project is None or all(name in project.classes for name in classes):
        return project
    try:
        grown = desk.ensure_project(list(classes), title)
    except AnnotationError as exc:
        logger.warning("Label Studio's project lacks classes %s and could not get them yet: %s",
                       [c for c in classes if c not in project.classes], exc)  # fmt: skip
        return project
    logger.info("Label Studio project %s follows the class list: %s", grown.id, list(grown.classes))
    return grown


def change_class(store: Store, desk: LabelStudioDesk | None, project_title: str, name: str, new_name: str | None) -> tuple[str, ...]:
    """Rename ``name`` to ``new_name``, or retire it (None), in Label Studio's project and the store; the new list.

    ValueError for a new name the class-name rule refuses; :class:`app.store.StoreError` for an unknown class;
    :class:`app.store.ClassInUseError` for a class in use (labels, model versions, or annotations in Label Studio);
    :class:`annotation.errors.AnnotationError` while Label Studio is away (nothing changed: the project must drop the
    choice too, or annotators could still choose it).
    """
    if new_name is not None:
        new_name = check_new_class([c for c in store.stored_classes() if c != name], new_name)
    wanted = store.change_class(name, new_name, dry_run=True)
    if desk is not None:
        try:
            desk.ensure_project(wanted, project_title)  # refuses to drop a choice annotations use
        except ProjectConfigError as exc:
            raise ClassInUseError(f"Label Studio's project has annotations choosing {name!r}") from exc
    try:
        changed = store.change_class(name, new_name)
    except ClassInUseError:
        if desk is not None:  # a label came in meanwhile: give the project its choice back
            try:
                desk.ensure_project(list(store.stored_classes()), project_title)
            except AnnotationError as exc:
                logger.warning("Label Studio's project lacks %r until the delivery job appends it: %s", name, exc)
        raise
    logger.info("class %r %s; classes now %s", name, "retired" if new_name is None else f"renamed to {new_name!r}", changed)
    return tuple(changed)
