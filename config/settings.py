"""The settings object: a YAML config file with ``JUICER_*`` environment overrides.

Precedence, highest first: keyword arguments to :func:`load_settings`, environment variables
(``JUICER_DATA_DIR``, nested fields with a double underscore: ``JUICER_LABEL_STUDIO__URL``), the config file
(``JUICER_CONFIG`` or the ``path`` argument), then the defaults below.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping

import yaml
from pydantic import BaseModel, Field, ValidationError
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict


class ConfigError(Exception):
    """A setting is missing or invalid; the message names it and says what is expected."""


class LearnerSettings(BaseModel):
    """How images are embedded and the head is trained."""

    backbone: str = Field("efficientnet-lite0", description="A known backbone name, a TF-Hub URL, or a SavedModel folder")
    input_size: int | None = Field(None, ge=32, le=1024, description="Override the backbone's input size (pixels)")
    batch_size: int = Field(32, ge=1, le=4096, description="Images per backbone call")
    mixed_precision: bool = Field(False, description="float16 compute on a GPU (ignored on the CPU)")
    max_image_pixels: int = Field(40_000_000, ge=1, description="Decoded images larger than this are rejected")


class LabelStudioSettings(BaseModel):
    """The Label Studio server juicer runs (or uses) and the project annotators work in."""

    url: str | None = Field(
        None, description="Base URL of a Label Studio juicer does not run itself; None: run one on 127.0.0.1:port"
    )
    port: int = Field(8080, ge=1, le=65535, description="Port for the Label Studio juicer runs (127.0.0.1 only)")
    username: str = Field(
        "admin@juicer.local", pattern=r"^[^@\s]+@[^@\s]+$", description="The admin's login (Label Studio wants an email)"
    )
    password: str = Field("juicer-admin", min_length=8, description="The admin's password")
    token: str = Field(
        "juicer-dev-token-change-me", min_length=8, description="The admin's API token (legacy token, set on first start)"
    )
    venv: Path = Field(Path(".venv-ls"), description="The venv that holds label-studio")
    data_dir: Path | None = Field(None, description="Label Studio's database and media; default <data_dir>/label-studio")
    files_root: Path | None = Field(None, description="Images served to annotators; default <data_dir>/images")
    project_title: str = Field("juicer", min_length=3, description="The Label Studio project annotators work in")
    webhook_secret: str = Field(
        "juicer-webhook-secret-change-me", min_length=8, description="Sent by Label Studio in X-Juicer-Secret"
    )
    timeout_s: float = Field(10.0, gt=0, le=300, description="Timeout of every call to Label Studio (seconds)")


class Settings(BaseSettings):
    """Everything juicer can be configured with."""

    model_config = SettingsConfigDict(env_prefix="JUICER_", env_nested_delimiter="__", extra="forbid")

    data_dir: Path = Field(Path("data"), description="Images, models, embeddings and state live here")
    fashion_mnist_dir: Path = Field(
        Path("/usr/share/datasets/fashion-mnist"), description="idx files of Debian's dataset-fashion-mnist"
    )
    flowers_url: str = Field(
        "https://storage.googleapis.com/download.tensorflow.org/example_images/flower_photos.tgz",
        description="The public TF flowers archive (`juicer data flowers`)",
    )
    learner: LearnerSettings = Field(default_factory=LearnerSettings)
    label_studio: LabelStudioSettings = Field(default_factory=LabelStudioSettings)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # load_settings() merges file and environment itself (so tests can pass an environ); only init counts.
        return (init_settings,)


def _read_config_file(path: Path) -> dict[str, Any]:
    try:
        loaded = yaml.safe_load(path.read_text()) or {}
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {exc}") from exc
    if not isinstance(loaded, dict):
        raise ConfigError(f"config file {path} must hold a mapping of settings, not {type(loaded).__name__}")
    return loaded


def _deep_merge(base: dict[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _describe(error: ValidationError) -> str:
    lines = []
    for item in error.errors():
        name = ".".join(str(part) for part in item["loc"]) or "(settings)"
        env = "JUICER_" + "__".join(str(part) for part in item["loc"]).upper()
        lines.append(f"  {name} (env {env}): {item['msg']}")
    return "invalid settings:\n" + "\n".join(lines)


def load_settings(path: str | Path | None = None, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
    """Load settings from the config file, the environment and ``overrides``; raise :class:`ConfigError` if invalid."""
    environ = os.environ if environ is None else environ
    path = path or environ.get("JUICER_CONFIG")
    values: dict[str, Any] = _read_config_file(Path(path)) if path else {}
    values = _deep_merge(values, _env_values(environ))
    values = _deep_merge(values, overrides)
    try:
        return Settings(**values)
    except ValidationError as exc:
        raise ConfigError(_describe(exc)) from exc


def _env_values(environ: Mapping[str, str]) -> dict[str, Any]:
    """``JUICER_A__B=v`` -> ``{"a": {"b": v}}``; values that look like JSON lists/objects are parsed as YAML."""
    values: dict[str, Any] = {}
    for key, raw in environ.items():
        if not key.startswith("JUICER_") or key == "JUICER_CONFIG":
            continue
        parts = key[len("JUICER_"):].lower().split("__")
        value: Any = yaml.safe_load(raw) if raw[:1] in "[{" else raw
        node = values
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"environment variable {key} conflicts with another JUICER_ variable")
        node[parts[-1]] = value
    return values
