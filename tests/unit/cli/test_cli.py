"""The juicer command line: subcommands are dispatched with settings; a bad setting stops it with a message."""

import sys
import types
from pathlib import Path

import pytest

from app.cli import main as cli


@pytest.fixture
def echo_command(monkeypatch):
    """A stand-in subcommand module, so the dispatcher is tested without TensorFlow or Label Studio."""
    calls = []
    module = types.SimpleNamespace(
        NAME="echo",
        HELP="record the call",
        add_arguments=lambda parser: parser.add_argument("word"),
        run=lambda args, settings: calls.append((args.word, settings)) or 0,
    )
    monkeypatch.setattr(cli, "_command_modules", lambda: [module])
    return calls


def test_help_exits_cleanly(capsys, echo_command):
    with pytest.raises(SystemExit) as excinfo:
        cli.main(["--help"])
    assert excinfo.value.code == 0
    assert "echo" in capsys.readouterr().out


def test_subcommand_runs_with_loaded_settings(monkeypatch, echo_command):
    monkeypatch.setenv("JUICER_LEARNER__BATCH_SIZE", "7")
    assert cli.main(["echo", "hello"]) == 0
    word, settings = echo_command[0]
    assert word == "hello" and settings.learner.batch_size == 7


def test_invalid_setting_stops_with_message(monkeypatch, capsys, echo_command):
    monkeypatch.setenv("JUICER_LEARNER__BATCH_SIZE", "-3")
    assert cli.main(["echo", "hello"]) == 2
    assert "learner.batch_size" in capsys.readouterr().err
    assert echo_command == []


def test_an_unknown_query_strategy_stops_with_a_message_naming_the_setting(monkeypatch, capsys, echo_command):
    monkeypatch.setenv("JUICER_SERVICE__QUERY_STRATEGY", "psychic")  # valid for config, unknown to learner
    assert cli.main(["echo", "hello"]) == 2
    assert "service.query_strategy" in capsys.readouterr().err
    assert echo_command == []


def test_every_shipped_subcommand_module_has_the_interface():
    for module in cli._command_modules():
        assert module.NAME in cli.COMMANDS
        assert callable(module.add_arguments) and callable(module.run) and module.HELP


# -- juicer simulate: found at run time in a checkout, absent from an installed juicer ----------------------------


@pytest.fixture
def installed_elsewhere(monkeypatch):
    """sys.path and sys.modules as the console script sees them when run from another folder: no entry holds a
    ``simulate`` folder (the checkout's package, or tests/unit/simulate/ that pytest put on the path); the simulate
    modules of this session are put back afterwards."""
    monkeypatch.setattr(sys, "path", [p for p in sys.path if not (Path(p or ".") / "simulate").is_dir()])
    saved = {name: module for name, module in sys.modules.items() if name.split(".")[0] == "simulate"}
    for name in saved:
        del sys.modules[name]
    yield
    for name in [name for name in sys.modules if name.split(".")[0] == "simulate"]:
        del sys.modules[name]
    sys.modules.update(saved)


def _help(capsys) -> str:
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    return capsys.readouterr().out


def test_simulate_is_listed_from_a_checkout(capsys):
    assert [module.NAME for module in cli._command_modules()] == list(cli.COMMANDS)
    assert "simulate" in _help(capsys)


def test_simulate_is_found_in_the_checkout_from_any_folder(installed_elsewhere):
    assert "simulate" in [module.NAME for module in cli._command_modules()]
    assert sys.modules["simulate.command"].__file__ == str(cli.REPOSITORY / "simulate" / "command.py")


def test_simulate_is_absent_where_the_repository_has_no_simulate_package(installed_elsewhere, monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(cli, "REPOSITORY", tmp_path)  # an installed juicer: site-packages holds no simulate/
    assert [module.NAME for module in cli._command_modules()] == [name for name in cli.COMMANDS if name != "simulate"]
    assert "simulate" not in _help(capsys)
    assert "simulate" not in sys.modules


def test_the_wheel_packages_no_simulation_and_no_tests():
    import tomllib

    from setuptools import find_packages

    find = tomllib.loads((cli.REPOSITORY / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]
    shipped = find_packages(str(cli.REPOSITORY), include=find["include"], exclude=find.get("exclude", ()))
    assert {name.split(".")[0] for name in shipped} == {"app", "learner", "annotation", "config"}  # no simulate, no tests


@pytest.mark.parametrize(
    ("flags", "says"),
    [
        (["--actors", "2"], "--address and --actors are for --engine ray"),
        (["--address", "127.0.0.1:6379"], "--address and --actors are for --engine ray"),
        (["--engine", "ray", "--actors", "0"], "must be at least 1"),
        (["--batch-size", "0"], "must be at least 1"),
    ],
)
def test_embed_refuses_flags_that_do_not_fit_with_a_message(monkeypatch, tmp_path, capsys, flags, says):
    monkeypatch.setenv("JUICER_DATA_DIR", str(tmp_path))
    assert cli.main(["embed", str(tmp_path), *flags]) == 2
    assert says in capsys.readouterr().err
    assert not (tmp_path / "juicer.db").exists()  # refused before anything was written
