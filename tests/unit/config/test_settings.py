"""The settings object: file, environment and overrides, and errors that name the setting."""

from pathlib import Path

import pytest

from config import ConfigError, load_settings


def test_defaults_without_file_or_environment():
    settings = load_settings(environ={})
    assert settings.data_dir == Path("data")
    assert settings.learner.backbone == "efficientnet-lite0"
    assert settings.learner.batch_size == 32


def test_file_then_environment_then_overrides(tmp_path):
    config_file = tmp_path / "juicer.yaml"
    config_file.write_text("data_dir: /srv/juicer\nlearner:\n  batch_size: 8\n  backbone: efficientnet-lite1\n")
    environ = {"JUICER_LEARNER__BATCH_SIZE": "64", "UNRELATED": "x"}
    settings = load_settings(config_file, environ=environ, data_dir="/override")
    assert settings.learner.batch_size == 64  # environment beats the file
    assert settings.learner.backbone == "efficientnet-lite1"  # the file beats the default
    assert settings.data_dir == Path("/override")  # keyword overrides beat everything


def test_config_path_from_environment(tmp_path):
    config_file = tmp_path / "c.yaml"
    config_file.write_text("learner: {mixed_precision: true}\n")
    assert load_settings(environ={"JUICER_CONFIG": str(config_file)}).learner.mixed_precision is True


def test_invalid_value_names_the_setting_and_its_variable():
    with pytest.raises(ConfigError) as excinfo:
        load_settings(environ={"JUICER_LEARNER__BATCH_SIZE": "lots"})
    assert "learner.batch_size" in str(excinfo.value)
    assert "JUICER_LEARNER__BATCH_SIZE" in str(excinfo.value)


def test_unknown_setting_is_refused(tmp_path):
    config_file = tmp_path / "c.yaml"
    config_file.write_text("learnr: {batch_size: 3}\n")
    with pytest.raises(ConfigError, match="learnr"):
        load_settings(config_file, environ={})


@pytest.mark.parametrize("text", ["[1, 2]", "a: [unclosed"])
def test_malformed_file_is_a_config_error(tmp_path, text):
    config_file = tmp_path / "c.yaml"
    config_file.write_text(text)
    with pytest.raises(ConfigError, match=str(config_file)):
        load_settings(config_file, environ={})


def test_missing_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        load_settings(tmp_path / "nope.yaml", environ={})


def test_pool_samples_default_to_the_learners_own_sizes():
    import learner.query
    import learner.selection
    from learner.semi import SemiSupervisedHead

    pool_sample = load_settings(environ={}).learner.pool_sample
    assert pool_sample.margin == learner.query.MARGIN_SAMPLE
    assert pool_sample.cluster == learner.selection.MAX_ROWS
    assert pool_sample.semi_head == SemiSupervisedHead().max_unlabelled


def test_pool_samples_from_the_file_and_the_environment(tmp_path):
    config_file = tmp_path / "c.yaml"
    config_file.write_text("learner:\n  pool_sample: {margin: 2000, cluster: 500}\n")
    settings = load_settings(config_file, environ={"JUICER_LEARNER__POOL_SAMPLE__CLUSTER": "800"})
    assert (settings.learner.pool_sample.margin, settings.learner.pool_sample.cluster) == (2000, 800)
    assert settings.learner.pool_sample.semi_head == 5000  # the one not set keeps its default


@pytest.mark.parametrize("name", ["margin", "cluster", "semi_head"])
@pytest.mark.parametrize("value", ["0", "-5", "1.5", "lots"])
def test_a_pool_sample_that_is_not_a_positive_integer_names_the_setting(name, value):
    variable = f"JUICER_LEARNER__POOL_SAMPLE__{name.upper()}"
    with pytest.raises(ConfigError) as excinfo:
        load_settings(environ={variable: value})
    message = str(excinfo.value)
    assert f"learner.pool_sample.{name}" in message and variable in message
    assert "greater than or equal to 1" in message or "valid integer" in message


def test_an_unknown_pool_sample_is_refused(tmp_path):
    config_file = tmp_path / "c.yaml"
    config_file.write_text("learner:\n  pool_sample: {margins: 10}\n")
    with pytest.raises(ConfigError, match="learner.pool_sample.margins"):
        load_settings(config_file, environ={})
