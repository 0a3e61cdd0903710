"""The ``juicer`` command line (:mod:`app.cli.main`) and its subcommands (:mod:`app.cli.commands`)."""

from app.cli.main import build_parser, main

__all__ = ["build_parser", "main"]
