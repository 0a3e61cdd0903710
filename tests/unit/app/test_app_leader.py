"""The scheduler lease: one holder among processes; another takes over within seconds of the holder's SIGKILL.

On SQLite (a file lock in the data folder) and on a real PostgreSQL (an advisory lock; marked ``postgres``).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from app.worker.leader import SchedulerLease
from app.store import Store

REPO = Path(__file__).resolve().parents[3]

HOLDER = """
import sys, time
from app.worker.leader import SchedulerLease
from app.store import Store
lease = SchedulerLease(Store.from_url(sys.argv[1]), sys.argv[2])
print("held" if lease.try_acquire() else "refused", flush=True)
time.sleep(600)
"""


@pytest.fixture
def store(store_url):
    store = Store.from_url(store_url)
    yield store
    store.close()


def test_one_holder_at_a_time_and_the_next_after_release(store, tmp_path):
    first, second = SchedulerLease(store, tmp_path), SchedulerLease(store, tmp_path)
    try:
        assert first.try_acquire() and first.held
        assert not second.try_acquire()
        assert first.still_held()
        first.release()
        assert second.try_acquire()
        assert not first.try_acquire()  # the second holds it now
    finally:
        first.release()
        second.release()


def test_a_process_killed_with_sigkill_hands_the_lease_over_within_seconds(store, store_url, tmp_path):
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, store_url, str(tmp_path)], cwd=REPO, stdout=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )  # fmt: skip
    acquired = threading.Event()
    lease = SchedulerLease(store, tmp_path, on_acquired=acquired.set, retry_s=0.2)
    try:
        assert holder.stdout.readline().strip() == "held"
        lease.start()
        assert not acquired.wait(1.0)  # the holder lives: nobody else runs the scheduler
        holder.send_signal(signal.SIGKILL)
        killed_at = time.monotonic()
        holder.wait(timeout=10)
        assert acquired.wait(10), "no process took the scheduler lease over after the holder died"
        assert time.monotonic() - killed_at < 5
        assert lease.held
    finally:
        lease.release()
        if holder.poll() is None:
            holder.kill()
            holder.wait()


@pytest.mark.postgres
def test_losing_the_lock_connection_stops_the_scheduler_and_competes_again(postgres, tmp_path):
    """PostgreSQL ends the lock's session (a restart, a network cut): the holder says it lost the lease."""
    import sqlalchemy as sa

    store = Store.from_url(postgres.new_database())
    lost = threading.Event()
    lease = SchedulerLease(store, tmp_path, on_lost=lost.set, retry_s=0.2)
    try:
        assert lease.try_acquire()
        lease.start()
        with store.engine.connect() as conn:
            conn.execute(sa.text(
                "SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory' AND objid = 7263112"
            ))  # fmt: skip
            conn.commit()
        assert lost.wait(10)
    finally:
        lease.release()
        store.close()
