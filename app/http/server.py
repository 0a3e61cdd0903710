"""The production HTTP server of ``juicer serve``: gunicorn, threaded workers, one scheduler among them.

``juicer serve`` prepares everything (Label Studio, the demo, the first model) and then replaces its own
process with ``python -m app.http.server <settings file>`` (``exec``: TensorFlow loaded for the preparation is not
carried into the server, and gunicorn's workers never fork a process that has it). :class:`JuicerServer` is a
gunicorn application configured from ``service.*``:

- ``workers`` processes of ``threads`` threads each (gthread); every worker loads its own backbone and model;
- ``max_connections`` connections per worker at most (gunicorn's ``worker_connections``), a listen backlog,
  and gunicorn's limits on the request line and headers;
- a slow client cannot pin a thread: every read from (and write to) a client socket times out after
  ``read_timeout_s``, a request that has not arrived whole within ``request_deadline_s`` is cut off however
  steadily it trickles (:class:`ReadTimeoutSocket`), and a connection that sends nothing is parked, not served;
- ``worker_timeout_s``: a worker whose main loop stops answering is killed and replaced;
- the scheduler (:class:`app.worker.scheduler.Scheduler`) runs in exactly one process, the holder of the scheduler lease
  (:mod:`app.worker.leader`: a PostgreSQL advisory lock, or ``<data_dir>/scheduler.lock`` on SQLite); every other worker,
  here or on another machine, retries every ``service.scheduler_retry_s`` and takes over within about that long
  when the holder dies. Workers queue retrains in the store (the scheduler runs them) and follow the newest model;
- ``/metrics`` adds up every worker (prometheus-client's multiprocess mode in a fresh folder per server start).
"""

from __future__ import annotations

import json
import logging
import os
import socket
import sys
import time
from pathlib import Path
from typing import Any

from gunicorn.app.base import BaseApplication
from gunicorn.workers.gthread import ThreadWorker

from config.settings import Settings

logger = logging.getLogger(__name__)

SETTINGS_FILE = "serve-settings.json"  # under <data_dir>/secrets/ (0600: it carries the secrets)
FOLLOW_EVERY_S = 2.0


class ReadTimeoutSocket(socket.socket):
    """A client socket with two bounds on a slow client: each blocking read or write waits at most
    ``read_timeout_s``, and the request itself (request line, headers, body) must have arrived within
    ``request_deadline_s`` of the thread taking the connection, so one byte every few seconds cannot hold a
    thread either. Past either, the call raises ``TimeoutError``: a body that stops arriving is answered 408
    (``app.http.problems.request_timeout``) and the connection closed; a request line or headers that stop arriving
    close the connection."""

    read_timeout_s = 30.0
    request_deadline_s = 120.0
    _deadline: float | None = None

    def setblocking(self, flag: bool) -> None:
        """Blocking with a timeout instead of forever (gunicorn asks once per request: the deadline starts);
        non-blocking as asked (between the requests of a kept-alive connection)."""
        if flag:
            self._deadline = time.monotonic() + self.request_deadline_s
            self.settimeout(self.read_timeout_s)
        else:
            self._deadline = None
            super().setblocking(False)

    def _before_read(self) -> None:
        if self._deadline is None:
            return
        left = self._deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"the request did not arrive within {self.request_deadline_s:g} s")
        self.settimeout(min(self.read_timeout_s, left))

    def recv(self, bufsize: int, flags: int = 0) -> bytes:
        """``socket.recv`` within the per-read timeout and the request deadline."""
        self._before_read()
        return super().recv(bufsize, flags)

    def recv_into(self, buffer: Any, nbytes: int = 0, flags: int = 0) -> int:
        """``socket.recv_into`` within the per-read timeout and the request deadline."""
        self._before_read()
        return super().recv_into(buffer, nbytes, flags)

    def sendall(self, data: Any, flags: int = 0) -> None:
        """``socket.sendall`` within ``read_timeout_s`` for the whole call (a client that stops reading)."""
        if self._deadline is not None:
            self.settimeout(self.read_timeout_s)
        super().sendall(data, flags)


class JuicerWorker(ThreadWorker):
    """gunicorn's threaded worker with a read timeout on every client connection (slow clients)."""

    def accept(self, listener: Any) -> None:
        """Accept like gunicorn does, then give the connection a :class:`ReadTimeoutSocket`."""
        import errno

        from gunicorn.workers.gthread import TConn

        try:
            client_sock, client_addr = listener.accept()
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.ECONNABORTED, errno.EWOULDBLOCK):
                raise
            return
        self.nr_conns += 1
        wrapped = ReadTimeoutSocket(client_sock.family, client_sock.type, client_sock.proto, fileno=client_sock.detach())
        wrapped.setblocking(True)
        self.enqueue_req(TConn(self.cfg, wrapped, client_addr, listener.getsockname()))


def gunicorn_options(settings: Settings) -> dict[str, Any]:
    """gunicorn's settings from ``service.*`` (see the module docstring)."""
    service = settings.service
    return {
        "bind": f"{service.host}:{service.port}",
        "workers": service.workers,
        "threads": service.threads,
        "worker_class": "app.http.server.JuicerWorker",
        "worker_connections": service.max_connections,
        "backlog": 64,
        "timeout": max(1, round(service.worker_timeout_s)),
        "graceful_timeout": 30,
        "keepalive": 5,
        "limit_request_line": 8190,
        "limit_request_fields": 100,
        "limit_request_field_size": 8190,
        "preload_app": False,  # each worker builds its own services after the fork
        "accesslog": None,
        "errorlog": "-",
        "loglevel": "info",
        "proc_name": "juicer",
        # gunicorn's runtime control socket (worker count, reload) lives at one path per user: two services on a
        # machine would fight over it, and nothing of juicer's uses it.
        "control_socket_disable": True,
    }


def follow_models(services: Any, every_s: float = FOLLOW_EVERY_S) -> Any:
    """A before-request hook for every worker: load a newer model version when one is recorded (by another process)."""
    state = {"checked": 0.0}

    def check() -> None:
        now = time.monotonic()
        if now - state["checked"] < every_s:
            return
        state["checked"] = now
        services.models.follow(services.store, services.data_dir, services.embeddings.backbone_id)

    return check


class JuicerServer(BaseApplication):
    """gunicorn running juicer's app; ``stop_label_studio``: stop the Label Studio ``juicer serve`` started, at exit."""

    def __init__(self, settings: Settings, stop_label_studio: bool = False) -> None:
        self.settings = settings
        self.stop_label_studio = stop_label_studio
        self.jobs: Any = None
        self._lease: Any = None
        super().__init__()

    def load_config(self) -> None:
        """Hand gunicorn its options and juicer's hooks."""
        for key, value in gunicorn_options(self.settings).items():
            self.cfg.set(key, value)
        ReadTimeoutSocket.read_timeout_s = self.settings.service.read_timeout_s
        ReadTimeoutSocket.request_deadline_s = self.settings.service.request_deadline_s
        self.cfg.set("worker_exit", self._worker_exit)
        self.cfg.set("child_exit", _child_exit)
        self.cfg.set("on_exit", self._on_exit)

    def load(self) -> Any:
        """In a worker, after the fork: the services, the scheduler if this worker holds the lock, the app."""
        from app import create_app
        from app.worker.scheduler import Scheduler
        from app.services import build_services

        services = build_services(self.settings)
        public = (self.settings.service.public_url or f"http://{self.settings.service.host}:{self.settings.service.port}")
        services.webhook_url = public.rstrip("/") + "/v1/webhooks/label-studio"
        from app.worker.scheduler import connect_label_studio

        connect_label_studio(services)
        app = create_app(services=services)
        app.before_request(follow_models(services))  # the lease may move here later: every worker follows the store
        services.scheduler_elsewhere = True  # some process holds the lease (or takes it within seconds)

        metrics = services.metrics
        metrics.scheduler_running.set(0)

        def start_jobs() -> None:
            self.jobs = Scheduler(services)
            self.jobs.start()
            metrics.scheduler_running.set(1)
            logger.info("worker %d runs the scheduler", os.getpid())

        def stop_jobs() -> None:
            jobs, self.jobs = self.jobs, None
            metrics.scheduler_running.set(0)
            if jobs is not None:
                jobs.shutdown(wait=False)

        from app.worker.leader import SchedulerLease

        self._lease = SchedulerLease(
            services.store, services.data_dir, on_acquired=start_jobs, on_lost=stop_jobs,
            retry_s=self.settings.service.scheduler_retry_s,
        )  # fmt: skip
        self._lease.start()
        return app

    def _worker_exit(self, server: Any, worker: Any) -> None:
        if self._lease is not None:
            self._lease.release()  # stops trying first, so a dying worker does not take the lease back
        if self.jobs is not None:
            self.jobs.shutdown(wait=True)

    def _on_exit(self, server: Any) -> None:
        folder = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
        if folder and Path(folder).name.startswith("juicer-metrics-"):  # the one use_multiprocess_dir made
            import shutil

            shutil.rmtree(folder, ignore_errors=True)
        if self.stop_label_studio:
            from annotation.launcher import launcher_from_settings

            print("stopping Label Studio ...", flush=True)
            launcher_from_settings(self.settings).stop()


def use_multiprocess_dir(folder: Path | None = None) -> Path:
    """Turn on prometheus-client's multiprocess mode for the workers forked after this call: an empty folder.

    prometheus_client picks how it stores values when it is imported, so this module never imports it before the
    fork (nor :mod:`app.http.metrics`). The folder must be local to the machine (values are files named by pid) and
    empty at every server start.
    """
    import shutil
    import tempfile

    folder = Path(folder or tempfile.mkdtemp(prefix="juicer-metrics-"))
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(folder)
    return folder


def _child_exit(server: Any, worker: Any) -> None:
    """In the master, when a worker ended: its live gauges leave /metrics (prometheus-client multiprocess mode)."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)


def write_settings(settings: Settings) -> Path:
    """The resolved settings (secrets included) as JSON in ``<data_dir>/secrets/`` (0600), for :func:`main`."""
    from app.core.files import write_atomic
    from app.core.secrets import secrets_dir

    def plain(value: Any) -> Any:
        if hasattr(value, "get_secret_value"):
            return value.get_secret_value()
        if isinstance(value, dict):
            return {key: plain(item) for key, item in value.items()}
        if isinstance(value, (list, tuple)):
            return [plain(item) for item in value]
        if isinstance(value, Path):
            return str(value)
        return value

    data = plain(settings.model_dump())
    return write_atomic(secrets_dir(Path(settings.data_dir)) / SETTINGS_FILE, json.dumps(data).encode(), mode=0o600)


def main(argv: list[str] | None = None) -> int:
    """``python -m app.http.server <settings.json> [--stop-label-studio]``: what ``juicer serve`` execs into."""
    argv = list(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for name in ("httpx", "apscheduler.scheduler", "apscheduler.executors.default", "alembic"):
        logging.getLogger(name).setLevel(logging.WARNING)
    settings = Settings(**json.loads(Path(argv[0]).read_text()))
    from app.core.datadir import prepare_data_dir

    prepare_data_dir(settings)  # `juicer serve` did it already; a server started by hand is no less private
    use_multiprocess_dir()  # before any worker imports prometheus_client
    JuicerServer(settings, stop_label_studio="--stop-label-studio" in argv).run()
    return 0


if __name__ == "__main__":
    # Run the importable module's main, not this __main__ copy: gunicorn loads the worker class by name
    # (app.http.server.JuicerWorker), so the settings must land on app.http.server's ReadTimeoutSocket, not on ours.
    from app.http.server import main as _main

    sys.exit(_main())
