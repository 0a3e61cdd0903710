"""Exactly one scheduler among many processes: a lease on a lock that is freed when its holder dies.

- PostgreSQL store: a session-level advisory lock (``pg_try_advisory_lock``) taken on a connection of the lease's
  own and held while the process lives. A process killed with SIGKILL closes its socket and the server frees the
  lock at once; a machine that vanishes without closing it is noticed when the server's TCP keepalive gives up
  (``tcp_keepalives_idle`` / ``_interval`` / ``_count`` on the server bound that delay).
- SQLite store: ``flock`` on ``<data_dir>/scheduler.lock`` (one machine, as SQLite is; the kernel frees it with
  the process).

Every process that does not hold the lease tries again every ``retry_s`` on a daemon thread, so another one takes
over within about ``retry_s`` of the holder's death (not only a replacement worker, which first loads a backbone).
The holder checks its lock connection as often; when it is gone (the database restarted, the network broke) it
calls ``on_lost`` (stop the scheduler) and competes again like the others.
"""

from __future__ import annotations

import fcntl
import logging
import os
import threading
from pathlib import Path
from typing import Any, Callable

import sqlalchemy as sa
from sqlalchemy.pool import NullPool

from app.store import Store

logger = logging.getLogger(__name__)

SCHEDULER_LOCK_KEY = 7263112  # juicer's scheduler; 7263110 is the migration lock (app.store.migrate)
SCHEDULER_LOCK_FILE = "scheduler.lock"


class SchedulerLease:
    """Who runs the scheduler: :meth:`try_acquire` once, or :meth:`start` a thread that keeps trying.

    ``on_acquired()`` runs (on the lease's thread) when this process becomes the holder, ``on_lost()`` when it
    stops being one; neither runs for a plain :meth:`release`.
    """

    def __init__(
        self,
        store: Store,
        data_dir: str | Path,
        *,
        on_acquired: Callable[[], Any] | None = None,
        on_lost: Callable[[], Any] | None = None,
        retry_s: float = 1.0,
    ) -> None:
        self.store = store
        self.data_dir = Path(data_dir)
        self.on_acquired = on_acquired
        self.on_lost = on_lost
        self.retry_s = retry_s
        self._engine: sa.Engine | None = None
        self._conn: sa.Connection | None = None
        self._file: Any = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._guard = threading.Lock()

    @property
    def kind(self) -> str:
        """``advisory-lock`` (PostgreSQL) or ``file-lock`` (SQLite)."""
        return "advisory-lock" if self.store.dialect == "postgresql" else "file-lock"

    @property
    def held(self) -> bool:
        """Whether this process holds the lease now."""
        return self._conn is not None or self._file is not None

    def try_acquire(self) -> bool:
        """Take the lease if nobody holds it; True when this process holds it (now or already)."""
        with self._guard:
            if self.held:
                return True
            if self.kind == "advisory-lock":
                return self._try_advisory()
            return self._try_file()

    def _try_advisory(self) -> bool:
        if self._engine is None:
            # A connection outside the store's pool: it lives as long as the lease, in autocommit (never idle in a
            # transaction), and nothing else runs on it.
            self._engine = sa.create_engine(self.store.engine.url, poolclass=NullPool, isolation_level="AUTOCOMMIT")
        conn = None
        try:
            conn = self._engine.connect()
            got = bool(conn.execute(sa.text("SELECT pg_try_advisory_lock(:key)"), {"key": SCHEDULER_LOCK_KEY}).scalar_one())
        except sa.exc.SQLAlchemyError as exc:
            logger.warning("cannot ask PostgreSQL for the scheduler lock: %s", exc)
            got = False
        if got:
            self._conn = conn
        elif conn is not None:
            conn.close()
        return got

    def _try_file(self) -> bool:
        handle = open(self.data_dir / SCHEDULER_LOCK_FILE, "a")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            return False
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        self._file = handle
        return True

    def still_held(self) -> bool:
        """Whether the lease is still ours: a file lock is until released; an advisory lock while its connection lives."""
        with self._guard:
            if self._file is not None:
                return True
            if self._conn is None:
                return False
            try:
                self._conn.execute(sa.text("SELECT 1"))
                return True
            except sa.exc.SQLAlchemyError as exc:
                logger.error("lost the scheduler lock's connection (%s): another process may take over", exc)
                self._drop()
                return False

    def _drop(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()  # closing the session frees the advisory lock
            except sa.exc.SQLAlchemyError:
                logger.debug("closing a broken lock connection failed", exc_info=True)
            self._conn = None
        if self._file is not None:
            self._file.close()  # closing the file frees the flock
            self._file = None

    def release(self) -> None:
        """Give the lease up (and stop trying)."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=max(5.0, 3 * self.retry_s))
        with self._guard:
            self._drop()
            if self._engine is not None:
                self._engine.dispose()
                self._engine = None

    def start(self) -> None:
        """Try now and then every ``retry_s`` on a daemon thread until :meth:`release`."""
        self._thread = threading.Thread(target=self._run, name="scheduler-lease", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            if not self.held:
                if self.try_acquire():
                    logger.info("process %d holds the scheduler lease (%s)", os.getpid(), self.kind)
                    self._call(self.on_acquired)
            elif not self.still_held():
                self._call(self.on_lost)
            self._stop.wait(self.retry_s)

    @staticmethod
    def _call(callback: Callable[[], Any] | None) -> None:
        if callback is None:
            return
        try:
            callback()
        except Exception:  # the lease thread must go on; the callback's failure is logged with its traceback
            logger.exception("scheduler lease callback failed")
