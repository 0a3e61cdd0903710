"""The service as a real subprocess for the fault suite: ``juicer serve`` (gunicorn), SIGKILLed and restarted."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from tests.integration.conftest import subprocess_env

REPO = Path(__file__).resolve().parents[3]


@dataclass
class Service:
    """One data folder; :meth:`start` runs ``juicer serve`` on it, :meth:`kill` SIGKILLs its whole process group."""

    data_dir: Path
    port: int
    env: dict[str, str]
    args: list[str] = field(default_factory=lambda: ["--demo-pool", "40", "--holdout", "40"])
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
        return (self.data_dir / "secrets" / "api-token").read_text().strip()

    def client(self, timeout_s: float = 30) -> httpx.Client:
        """An HTTP client with the generated API token."""
        return httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {self.token}"}, timeout=timeout_s)

    def start(self, timeout_s: float = 420) -> None:
        """Start ``juicer serve`` and wait until ``/readyz`` answers 200 (ready or degraded)."""
        self.starts += 1
        with self.log_path.open("a") as log:
            log.write(f"\n===== start {self.starts} =====\n")
            log.flush()
            self.process = subprocess.Popen(
                [sys.executable, "-m", "app.cli", "serve", *self.args], cwd=REPO, env=self.env,
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        deadline = time.monotonic() + timeout_s
        while True:
            assert self.process.poll() is None, f"juicer serve exited ({self.process.returncode}):\n{self.tail()}"
            assert time.monotonic() < deadline, f"juicer serve not ready in {timeout_s} s:\n{self.tail()}"
            try:
                if httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)

    def kill(self) -> None:
        """SIGKILL the gunicorn master and its workers at once (a crash: nothing is flushed or shut down)."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=30)
        self._wait_port_free()

    def stop(self) -> None:
        """SIGTERM (a clean stop), SIGKILL if it lingers."""
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
        return self.log_path.read_text()[-chars:] if self.log_path.exists() else ""

    def wait_for(self, predicate: Any, timeout_s: float = 120, what: str = "condition") -> Any:
        """Poll ``predicate()`` until it returns something truthy."""
        deadline = time.monotonic() + timeout_s
        while True:
            value = predicate()
            if value:
                return value
            assert time.monotonic() < deadline, f"{what} not reached in {timeout_s} s:\n{self.tail()}"
            time.sleep(0.25)


def service_env(data_dir: Path, port: int, label_studio: Any, project_title: str, **extra: str) -> dict[str, str]:
    """The environment of a service on ``data_dir`` using the session's Label Studio (or none at ``label_studio``)."""
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


def data_folder(root: Path) -> Path:
    """A fresh data folder sharing the repository's embedding cache (the demo images are embedded once, ever)."""
    data_dir = root / "data"
    data_dir.mkdir(parents=True)
    shared = REPO / "data" / "embeddings"
    shared.mkdir(parents=True, exist_ok=True)
    (data_dir / "embeddings").symlink_to(shared.resolve(), target_is_directory=True)
    return data_dir
