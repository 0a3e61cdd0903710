"""The ``juicer`` command line: one subcommand a module under ``app/commands/``.

Each module there defines ``NAME``, ``HELP``, ``add_arguments(parser)`` and ``run(args, settings) -> int``.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from typing import Sequence

from config import ConfigError, load_settings

# Subcommand modules, in the order `juicer --help` lists them.
COMMANDS = ("serve", "simulate", "curve", "data", "backbone", "labelstudio")


def _command_modules() -> list:
    return [importlib.import_module(f"app.commands.{name}") for name in COMMANDS]


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
    try:
        settings = load_settings(args.config)
    except ConfigError as exc:
        print(f"juicer: {exc}", file=sys.stderr)
        return 2
    return int(args.run(args, settings) or 0)


if __name__ == "__main__":
    sys.exit(main())
