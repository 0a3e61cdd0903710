"""The gunicorn server's settings and its slow-client guard (the real run: fault suite)."""

from __future__ import annotations

import socket
import time

import pytest

from app.http.server import ReadTimeoutSocket, gunicorn_options
from config import load_settings


def test_gunicorn_runs_threaded_workers_with_bounded_connections_and_timeouts(tmp_path):
    settings = load_settings(environ={}, data_dir=tmp_path, service={"workers": 3, "max_connections": 50})
    options = gunicorn_options(settings)
    assert options["workers"] == 3 and options["worker_class"] == "app.http.server.JuicerWorker"
    assert options["worker_connections"] == 50 and options["timeout"] > 0 and options["keepalive"] <= 10
    assert options["limit_request_line"] and options["limit_request_fields"] and not options["preload_app"]
    assert options["control_socket_disable"]


def test_a_slow_client_read_times_out_instead_of_pinning_a_thread():
    ours, theirs = socket.socketpair()
    wrapped = ReadTimeoutSocket(ours.family, ours.type, ours.proto, fileno=ours.detach())
    wrapped.read_timeout_s = 0.2
    wrapped.setblocking(True)  # what gunicorn asks for; it gets a timeout
    theirs.sendall(b"GET / HTTP/1.1\r\n")  # and then nothing more
    assert wrapped.recv(100)
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        wrapped.recv(100)
    assert time.monotonic() - started < 2
    wrapped.close()
    theirs.close()


def test_a_request_trickling_in_is_cut_off_at_the_deadline_though_every_read_is_quick():
    import threading

    ours, theirs = socket.socketpair()
    wrapped = ReadTimeoutSocket(ours.family, ours.type, ours.proto, fileno=ours.detach())
    wrapped.read_timeout_s, wrapped.request_deadline_s = 0.5, 1.0
    stop = threading.Event()

    def trickle() -> None:  # one byte every 0.1 s: never a read that waits 0.5 s
        while not stop.wait(0.1):
            try:
                theirs.sendall(b"x")
            except OSError:
                return

    threading.Thread(target=trickle, daemon=True).start()
    wrapped.setblocking(True)
    started = time.monotonic()
    with pytest.raises(TimeoutError):  # at the deadline, or inside the last read that would pass it
        while True:
            assert wrapped.recv(100)
    assert 0.9 < time.monotonic() - started < 2
    wrapped.setblocking(False)
    wrapped.setblocking(True)  # the next request on a kept-alive connection gets a deadline of its own
    assert wrapped.recv(100)
    stop.set()
    wrapped.close()
    theirs.close()


# The one-scheduler lease (file lock on SQLite, advisory lock on PostgreSQL, takeover after SIGKILL): test_app_leader.py


def test_the_server_module_leaves_prometheus_client_unimported_until_the_workers_fork():
    """prometheus_client chooses its value store at import: imported in the master, workers would not share /metrics."""
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[3]
    code = "import sys, app.http.server; sys.exit('prometheus_client' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], cwd=repo, timeout=60).returncode == 0


def test_a_worker_follows_the_newest_recorded_model(services, trained):
    from app.http.server import follow_models

    trained.trainer.retrain(force=True)  # the scheduler's worker records v0002
    newest = services.models.current
    services.models._current = None  # this worker still has nothing (or an older version)
    check = follow_models(services, every_s=0)
    check()
    assert services.models.current.version == newest.version
