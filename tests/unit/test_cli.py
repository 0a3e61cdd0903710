"""The juicer command line: subcommands are dispatched with settings; a bad setting stops it with a message."""

import types

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
