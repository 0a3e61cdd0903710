"""The ``juicer`` command line: one subcommand a module under ``app/cli/commands/``.

Each module there defines ``NAME``, ``HELP``, ``add_arguments(parser)`` and ``run(args, settings) -> int``.
``juicer simulate`` is not shipped: its module lives in the repository's ``simulate/`` package (the simulated
annotator), and it is listed only where that package is importable, i.e. from a checkout of the repository.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import logging
import sys
from pathlib import Path
from types import ModuleType
from typing import Sequence

from config import ConfigError, load_settings

# Subcommand modules, in the order `juicer --help` lists them.
COMMANDS = ("serve", "import", "embed", "classes", "simulate", "curve", "data", "backbone", "labelstudio")
# A command whose module name differs from it (``import`` is a Python keyword).
MODULE_NAMES = {"import": "importing"}
# Commands from outside the shipped packages: found by name at run time, never imported statically (the
# import-linter contract "shipped packages do not import simulate" holds).
REPOSITORY_COMMANDS = {"simulate": "simulate.command"}
REPOSITORY = Path(__file__).resolve().parents[2]


def _repository_command(module_name: str) -> ModuleType | None:
    """A command module from the repository checkout (``simulate/``), or None in an installed juicer."""
    top = module_name.split(".")[0]
    if importlib.util.find_spec(top) is None:
        if not (REPOSITORY / top / "__init__.py").is_file():
            return None
        sys.path.append(str(REPOSITORY))  # the console script runs from anywhere; the checkout holds simulate/
    return importlib.import_module(module_name)


def _command_modules() -> list[ModuleType]:
    modules = []
    for name in COMMANDS:
        if name in REPOSITORY_COMMANDS:
            module = _repository_command(REPOSITORY_COMMANDS[name])
            if module is not None:
                modules.append(module)
        else:
            modules.append(importlib.import_module(f"app.cli.commands.{MODULE_NAMES.get(name, name)}"))
    return modules


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every available subcommand."""
    parser = argparse.ArgumentParser(prog="juicer", description="Human-in-the-loop active learning for images.")
    parser.add_argument("--config", help="YAML config file (default: $JUICER_CONFIG)")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in _command_modules():
        command = sub.add_parser(module.NAME, help=module.HELP, description=module.HELP)
        module.add_arguments(command)
        command.set_defaults(run=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``juicer`` console command."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    from app.core.training import query_strategy

    try:
        settings = load_settings(args.config)
        query_strategy(settings.service)  # checked against learner's registry before any command starts
    except ConfigError as exc:
        print(f"juicer: {exc}", file=sys.stderr)
        return 2
    return int(args.run(args, settings) or 0)


if __name__ == "__main__":
    sys.exit(main())
