"""``juicer labelstudio`` without a server: what it says and returns."""

from __future__ import annotations

import argparse

from app.cli.commands import labelstudio
from config import load_settings


def run(action: str, settings) -> int:
    return labelstudio.run(argparse.Namespace(action=action, timeout=1), settings)


def test_status_and_stop_without_a_server(tmp_path, capsys):
    settings = load_settings(environ={}, data_dir=tmp_path)
    assert run("status", settings) == 1
    assert "not running" in capsys.readouterr().out
    assert run("stop", settings) == 0
    assert "was not running" in capsys.readouterr().out


def test_an_external_server_is_not_started(tmp_path, capsys):
    settings = load_settings(environ={}, data_dir=tmp_path, label_studio={"url": "http://ls.example:8080"})
    assert run("start", settings) == 1
    assert "does not run one" in capsys.readouterr().out


def test_start_without_the_venv_says_how_to_make_it(tmp_path, capsys):
    settings = load_settings(environ={}, data_dir=tmp_path, label_studio={"venv": str(tmp_path / "no-venv")})
    assert run("start", settings) == 1
    assert "make ls-venv" in capsys.readouterr().out
