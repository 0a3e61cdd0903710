"""``juicer classes list|add NAME|rename NAME NEW|retire NAME``: the class list, grown while the service runs.

The command writes the store and Label Studio's project itself, through the same functions ``POST /v1/classes``
calls (:mod:`app.core.classes`), rather than calling the running service's API: it works whether or not
``juicer serve`` runs (before the first start, or with the service stopped), needs no API URL or token, and a
running service sees the change at once because every process reads the class list from the store when it needs
it. Label Studio away: the class is stored and the service's delivery job appends it to the project later.
"""

from __future__ import annotations

import argparse
import sys

from config import Settings

NAME = "classes"
HELP = "list the classes, add one while the service runs, or rename / retire one nobody used yet"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``list``, ``add NAME``, ``rename NAME NEW``, ``retire NAME``."""
    sub = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    sub.add_parser("list", help="the classes in order; those added at run time are marked")
    add = sub.add_parser("add", help="add a class: the store, Label Studio's project, and the head at the next retrain")
    add.add_argument("name")
    rename = sub.add_parser("rename", help="rename a class added at run time that nothing uses yet")
    rename.add_argument("name")
    rename.add_argument("new_name")
    retire = sub.add_parser("retire", help="retire a class added at run time that nothing uses yet")
    retire.add_argument("name")


def _print_list(classes: tuple[str, ...], added: tuple[str, ...]) -> None:
    for name in classes:
        print(f"{name}{'  (added at run time)' if name in added else ''}")


def run(args: argparse.Namespace, settings: Settings) -> int:
    """Do ``args.action``; 0 on success, 1 when it was refused (the reason on stderr)."""
    from annotation.errors import AnnotationError
    from app.core.classes import IN_USE_ADVICE, add_class, change_class
    from app.core.datadir import prepare_data_dir
    from app.core.secrets import resolve_secrets
    from app.services import SetupError, resolve_classes
    from app.store import ClassInUseError, Store, StoreError

    prepare_data_dir(settings)
    settings = resolve_secrets(settings)
    store = Store.from_settings(settings)
    try:
        resolve_classes(settings, store)  # the start's rule: a configured list is recorded before it can grow
        if args.action == "list":
            _print_list(store.stored_classes(), store.added_classes())
            return 0
        from annotation.desk import desk_from_settings

        title = settings.label_studio.project_title
        with desk_from_settings(settings) as desk:
            if args.action == "add":
                result = add_class(store, desk, title, args.name)
                print(f"added {args.name.strip()!r}" if result.added else f"{args.name.strip()!r} is a class already")
                if result.project is not None:
                    print(f"Label Studio project {result.project.title!r} (id {result.project.id}): {', '.join(result.project.classes)}")
                else:
                    print(f"Label Studio did not take it yet ({result.label_studio_error}): the service's delivery job "
                          "adds the choice to its project once it answers")  # fmt: skip
            else:
                new_name = args.new_name if args.action == "rename" else None
                change_class(store, desk, title, args.name, new_name)
                print(f"{'renamed' if new_name else 'retired'} {args.name!r}" + (f" to {new_name!r}" if new_name else ""))
        _print_list(store.stored_classes(), store.added_classes())
        return 0
    except ClassInUseError as exc:
        print(f"juicer classes: {exc}: {IN_USE_ADVICE}", file=sys.stderr)
    except AnnotationError as exc:
        print(f"juicer classes: Label Studio: {exc}; nothing changed: try again when it answers", file=sys.stderr)
    except (ValueError, StoreError, SetupError) as exc:
        print(f"juicer classes: {exc}", file=sys.stderr)
    finally:
        store.close()
    return 1
