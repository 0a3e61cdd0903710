"""Subcommands of the ``juicer`` command line (see :mod:`app.cli`)."""
