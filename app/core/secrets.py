"""Secrets that are not configured are generated once into ``<data_dir>/secrets/`` (mode 0600), never printed.

:func:`resolve_secrets` returns the settings with every secret filled in: the API token
(``service.api_token``), Label Studio's admin password and token and the webhook secret. A value set in the
config file or the environment wins; otherwise the file under ``<data_dir>/secrets/`` is read, or created with
a random value (``secrets.token_urlsafe``) on first start. Only the files' paths are ever logged.

``service.api_token: none`` is an explicit choice to run without authentication: it is kept as it is (so
resolving twice changes nothing), :func:`api_token` answers None for it, and it is warned about at every start.
"""

from __future__ import annotations

import logging
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from pydantic import SecretStr

from config.settings import Settings

logger = logging.getLogger(__name__)

API_TOKEN_FILE = "api-token"
OFF = "none"


def secrets_dir(data_dir: Path) -> Path:
    """``<data_dir>/secrets``."""
    return Path(data_dir) / "secrets"


def ensure_secret(data_dir: Path, name: str, nbytes: int = 32) -> tuple[str, Path]:
    """The secret kept in ``<data_dir>/secrets/<name>``, created (0600, random) when missing; (value, path)."""
    folder = secrets_dir(data_dir)
    folder.mkdir(parents=True, exist_ok=True)
    os.chmod(folder, 0o700)
    path = folder / name
    try:
        value = path.read_text().strip()
        if value:
            return value, path
    except FileNotFoundError:
        pass
    value = secrets.token_urlsafe(nbytes)
    temporary = folder / f".{name}.{os.getpid()}.tmp"
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, value.encode() + b"\n")
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.link(temporary, path)  # first writer wins: a second process starting at once reads the same value
    except FileExistsError:
        value = path.read_text().strip()
    finally:
        temporary.unlink(missing_ok=True)
    dir_fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    logger.info("generated a new secret in %s", path)
    return value, path


@dataclass(frozen=True)
class LabelStudioSecrets:
    """Label Studio's admin password and API token, and the webhook secret, as this start uses them."""

    password: str
    token: str
    webhook_secret: str


#: What juicer shipped before secrets were generated: a Label Studio data folder made then has them baked in.
LEGACY_LABEL_STUDIO = {"label-studio-password": "juicer-admin", "label-studio-token": "juicer-dev-token-change-me"}


def _adopt_legacy(settings: Settings) -> None:
    """A Label Studio database created by an older juicer knows only the old shipped password and token (the token
    is fixed at its first start): record those as this data folder's secrets, and say they should be changed."""
    ls = settings.label_studio
    database = Path(ls.data_dir or Path(settings.data_dir) / "label-studio") / "label_studio.sqlite3"
    folder = secrets_dir(Path(settings.data_dir))
    if not database.exists():
        return
    for name, value in LEGACY_LABEL_STUDIO.items():
        configured = ls.password if name == "label-studio-password" else ls.token
        if configured or (folder / name).exists():
            continue
        folder.mkdir(parents=True, exist_ok=True)
        from app.core.files import write_atomic

        write_atomic(folder / name, value.encode() + b"\n", mode=0o600)
        logger.warning(
            "Label Studio in %s was created with juicer's old shipped %s; it is kept in %s so the desk still "
            "logs in: change it in Label Studio and set label_studio.%s",
            database.parent, name.split("-")[-1], folder / name, name.split("-")[-1],
        )  # fmt: skip


def label_studio_secrets(settings: Settings) -> LabelStudioSecrets:
    """Configured values, else the generated ones under ``<data_dir>/secrets/``."""
    ls = settings.label_studio
    data_dir = Path(settings.data_dir)
    _adopt_legacy(settings)
    return LabelStudioSecrets(
        password=ls.password or ensure_secret(data_dir, "label-studio-password", 18)[0],
        token=ls.token or ensure_secret(data_dir, "label-studio-token", 30)[0],
        webhook_secret=ls.webhook_secret or ensure_secret(data_dir, "webhook-secret", 30)[0],
    )


def api_token_off(settings: Settings) -> bool:
    """Whether ``service.api_token`` is the explicit ``none`` (no authentication)."""
    token = settings.service.api_token
    return token is not None and token.get_secret_value().strip().lower() == OFF


def resolve_secrets(settings: Settings) -> Settings:
    """``settings`` with every secret filled in (generated on first start); logs where they are, never what."""
    data_dir = Path(settings.data_dir)
    service = settings.service
    if api_token_off(settings):
        logger.warning(
            "service.api_token is 'none': authentication is OFF, anyone who reaches %s:%s can predict, label and "
            "retrain; set a token or leave it unset to have one generated",
            service.host, service.port,
        )  # fmt: skip
    elif service.api_token is None:
        token, path = ensure_secret(data_dir, API_TOKEN_FILE)
        logger.info(
            "the API token for /v1/*, the report, the gallery and /metrics is in %s (send it as 'Authorization: "
            "Bearer <token>'; a browser asks for it as the password, any user name)", path,
        )
        service = service.model_copy(update={"api_token": SecretStr(token)})
    found = label_studio_secrets(settings)
    label_studio = settings.label_studio.model_copy(
        update={"password": found.password, "token": found.token, "webhook_secret": found.webhook_secret}
    )
    return settings.model_copy(update={"service": service, "label_studio": label_studio})


def api_token(settings: Settings) -> str | None:
    """The token ``/v1/*`` needs, or None when authentication is off (``none``, or settings never resolved)."""
    if settings.service.api_token is None or api_token_off(settings):
        return None
    return settings.service.api_token.get_secret_value()
