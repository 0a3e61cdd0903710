"""The simulated annotator and ``juicer simulate``: for the repository and its tests, never shipped.

:mod:`simulate.annotator` is a person's moves in Label Studio's editor, :mod:`simulate.driver` plays annotators
from a dataset's ground truth against a running service, and :mod:`simulate.command` is the ``juicer simulate``
subcommand, which :mod:`app.cli.main` finds at run time in a checkout. ``pyproject.toml`` packages neither this
folder nor anything that imports it (an import-linter contract: no shipped package imports ``simulate``).
"""
