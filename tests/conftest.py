"""Fixtures for every test."""

import os

import pytest


@pytest.fixture(autouse=True, scope="session")
def _settings_come_from_the_test_not_the_shell():
    """Drop ``JUICER_*`` variables for the session: `make` exports ``JUICER_DATA_DIR``, a developer may have more,
    and settings leaking from the shell would make tests write into (or read from) the real data folder."""
    saved = {name: os.environ.pop(name) for name in list(os.environ)
             if name.startswith("JUICER_") and not name.startswith("JUICER_TEST_")}
    yield
    os.environ.update(saved)
