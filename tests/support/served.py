"""``juicer serve`` as a real subprocess, started as a user does, for the end-to-end and fault suites and the
benchmarks.

:class:`ServedJuicer` runs it on one data folder in its own process group: :meth:`~ServedJuicer.start` waits until
it is ready, :meth:`~ServedJuicer.stop` is a clean stop (SIGTERM, as a terminal's Ctrl-C or systemd sends to the
whole group; the service then stops the Label Studio it started), :meth:`~ServedJuicer.kill` a crash (SIGKILL, nothing
flushed), and ``start()`` again restarts it on the same data. As a context manager it starts and stops once.

:func:`subprocess_env` is the environment it runs with (the shell's minus ``JUICER_*``, plus this checkout and the
given settings); :func:`service_env` adds the fault suite's settings and a Label Studio the session runs;
:func:`data_folder` and :func:`link_built_backbones` share the repository's embedding cache and converted backbones,
so no image is embedded and no backbone converted twice.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import httpx

from tests.support.wait import poll

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def answers_ready(url: str) -> bool:
    """Whether ``GET {url}/readyz`` answers 200 (ready or degraded); False while the service is not up."""
    try:
        return httpx.get(f"{url}/readyz", timeout=5).status_code == 200
    except httpx.HTTPError:
        return False


def subprocess_env(data_dir: Path, **settings: str) -> dict[str, str]:
    """The environment of juicer run as a subprocess on ``data_dir``: the shell's, minus ``JUICER_*`` and the plain
    names Label Studio misreads, plus this checkout on the path and ``settings`` (``JUICER_*`` variables)."""
    env = {k: v for k, v in os.environ.items() if k not in ("HOST", "USERNAME", "PASSWORD", "PORT") and not k.startswith("JUICER_")}
    env.update(PYTHONPATH=str(REPO), TF_CPP_MIN_LOG_LEVEL="2", JUICER_DATA_DIR=str(data_dir), **settings)
    return env


def service_env(data_dir: Path, port: int, label_studio: Any, project_title: str, **extra: str) -> dict[str, str]:
    """The fault suite's environment for a service on ``data_dir`` using the session's Label Studio (or, given a
    URL string, one that may not be there): fast delivery, no safety-net pull, a known webhook secret."""
    return subprocess_env(
        data_dir,
        JUICER_SERVICE__PORT=str(port),
        JUICER_LEARNER__BACKBONE=str(REPO / "data" / "backbones" / "efficientnet-lite0"),
        JUICER_LABEL_STUDIO__URL=label_studio.url if hasattr(label_studio, "url") else str(label_studio),
        JUICER_LABEL_STUDIO__TOKEN=getattr(label_studio, "token", "no-label-studio-token"),
        JUICER_LABEL_STUDIO__PROJECT_TITLE=project_title,
        JUICER_LABEL_STUDIO__WEBHOOK_SECRET="fault-suite-secret",
        JUICER_SERVICE__DELIVER_INTERVAL_S="1",
        JUICER_SERVICE__WEBHOOK_INTERVAL_S="1",  # as before the interval was its own setting (max(1, deliver))
        JUICER_SERVICE__CONNECT_INTERVAL_S="1",
        JUICER_SERVICE__PULL_INTERVAL_S="3600",  # the suite checks webhooks and the outbox, not the safety-net pull
        **extra,
    )


def link_built_backbones(data_dir: Path) -> None:
    """Reuse the backbones `make backbone` converted (a symlink, read only) instead of converting them again."""
    built = REPO / "data" / "backbones"
    if built.is_dir():
        (data_dir / "backbones").symlink_to(built.resolve(), target_is_directory=True)


def data_folder(root: Path) -> Path:
    """A fresh data folder sharing the repository's embedding cache (the demo images are embedded once, ever)."""
    data_dir = root / "data"
    data_dir.mkdir(parents=True)
    shared = REPO / "data" / "embeddings"
    shared.mkdir(parents=True, exist_ok=True)
    (data_dir / "embeddings").symlink_to(shared.resolve(), target_is_directory=True)
    return data_dir


@dataclass
class ServedJuicer:
    """``juicer serve ARGS`` on ``data_dir`` (``env`` must set the port given): see the module docstring.

    ``ready(url)`` says when a start is done (default: ``/readyz`` answers 200); the log of every start goes to
    ``serve-<port>.log`` beside the data folder.
    """

    data_dir: Path
    port: int
    env: dict[str, str]
    args: list[str] = field(default_factory=lambda: ["--demo-pool", "40", "--holdout", "40"])
    ready: Callable[[str], bool] = answers_ready
    process: subprocess.Popen | None = None
    starts: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.data_dir.parent / f"serve-{self.port}.log"

    @property
    def token(self) -> str:
        """The API token ``juicer serve`` generated on its first start."""
        return (self.data_dir / "secrets" / "api-token").read_text().strip()

    def client(self, timeout_s: float = 30) -> httpx.Client:
        """An HTTP client with the generated API token."""
        return httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {self.token}"}, timeout=timeout_s)

    def start(self, timeout_s: float = 600) -> None:
        """Start ``juicer serve`` and wait until :attr:`ready` says so (AssertionError, with the log's tail, if it
        exits first or takes longer than ``timeout_s``)."""
        self.starts += 1
        with self.log_path.open("a") as log:
            log.write(f"\n===== start {self.starts} =====\n")
            log.flush()
            self.process = subprocess.Popen(
                [sys.executable, "-m", "app.cli", "serve", *self.args], cwd=REPO, env=self.env,
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        deadline = time.monotonic() + timeout_s
        while not self.ready(self.url):
            assert self.process.poll() is None, f"juicer serve exited ({self.process.returncode}):\n{self.tail()}"
            assert time.monotonic() < deadline, f"juicer serve not ready in {timeout_s:g} s:\n{self.tail()}"
            time.sleep(0.5)

    def kill(self) -> None:
        """SIGKILL the gunicorn master and its workers at once (a crash: nothing is flushed or shut down)."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=30)
        self._wait_port_free()

    def stop(self) -> None:
        """SIGTERM the process group (a clean stop), SIGKILL it if it lingers past a minute."""
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        self._wait_port_free()

    def _wait_port_free(self) -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                httpx.get(f"{self.url}/healthz", timeout=0.5)
            except httpx.HTTPError:
                return
            time.sleep(0.2)

    def tail(self, chars: int = 4000) -> str:
        """The end of the service's log."""
        return self.log_path.read_text()[-chars:] if self.log_path.exists() else ""

    def wait_for(self, predicate: Callable[[], Any], timeout_s: float = 120, what: str = "condition") -> Any:
        """Poll ``predicate()`` until it returns something truthy (returned); AssertionError with the log's tail."""
        try:
            return poll(predicate, timeout_s, what, interval_s=0.25)
        except AssertionError as exc:
            raise AssertionError(f"{exc}:\n{self.tail()}") from None

    def __enter__(self) -> "ServedJuicer":
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
