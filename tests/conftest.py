"""Fixtures for every test."""

import os

import pytest


@pytest.fixture(autouse=True, scope="session")
def _settings_come_from_the_test_not_the_shell():
    """Drop ``JUICER_*`` variables for the session: `make` exports ``JUICER_DATA_DIR``, a developer may have more,
    and settings leaking from the shell would make tests write into (or read from) the real data folder."""
    saved = {name: os.environ.pop(name) for name in list(os.environ)
             if name.startswith("JUICER_") and not name.startswith("JUICER_TEST_")}
    yield
    os.environ.update(saved)


# -- a real PostgreSQL for the tests marked `postgres` -----------------------------------------------------------
# One throwaway cluster per session (initdb + pg_ctl into a temp folder, a free loopback port), one fresh database
# per test. Debian's binaries (scripts/system-deps.sh installs `postgresql`); JUICER_TEST_PG_BIN overrides.
import itertools  # noqa: E402
import shutil  # noqa: E402
import socket  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402


def _pg_bin() -> Path:
    given = os.environ.get("JUICER_TEST_PG_BIN")
    candidates = [Path(given)] if given else sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)
    for folder in candidates:
        if (folder / "initdb").exists():
            return folder
    raise RuntimeError(
        "no PostgreSQL binaries (initdb, pg_ctl) found under /usr/lib/postgresql/*/bin: run scripts/system-deps.sh "
        "(it installs Debian's postgresql), set JUICER_TEST_PG_BIN, or deselect these tests with -m 'not postgres'"
    )


class PostgresServer:
    """A PostgreSQL cluster in a temp folder on 127.0.0.1:``port``, user ``juicer`` (trust auth), for tests."""

    def __init__(self) -> None:
        self.bin = _pg_bin()
        self.root = Path(tempfile.mkdtemp(prefix="juicer-pg-"))  # not under pytest's 0700 tmp: the postgres user reads it
        self.as_root = os.geteuid() == 0  # initdb refuses root: run the server as the postgres user
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = int(sock.getsockname()[1])
        self._names = itertools.count(1)

    def _run(self, *args: str) -> None:
        command = [str(self.bin / args[0]), *args[1:]]
        if self.as_root:
            shutil.chown(self.root, user="postgres")
            command = ["runuser", "-u", "postgres", "--", *command]
        subprocess.run(command, check=True, capture_output=True, timeout=120)

    def start(self) -> "PostgresServer":
        """initdb and start; returns self once it answers."""
        self._run("initdb", "-D", str(self.root / "pg"), "-A", "trust", "-U", "juicer", "--no-sync", "-E", "UTF8")
        options = (f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off "
                   "-c synchronous_commit=off -c full_page_writes=off -c max_connections=200")  # fmt: skip
        self._run("pg_ctl", "-D", str(self.root / "pg"), "-o", options, "-l", str(self.root / "log"), "-w", "-t", "60", "start")
        return self

    def stop(self) -> None:
        """Stop the server and remove its folder."""
        try:
            self._run("pg_ctl", "-D", str(self.root / "pg"), "-m", "fast", "-w", "stop")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    def url(self, database: str = "postgres") -> str:
        """A SQLAlchemy URL (psycopg 3) for ``database``."""
        return f"postgresql+psycopg://juicer@127.0.0.1:{self.port}/{database}"

    def new_database(self) -> str:
        """A fresh, empty database; its URL."""
        import sqlalchemy as sa

        name = f"test_{next(self._names)}"
        engine = sa.create_engine(self.url(), isolation_level="AUTOCOMMIT")
        try:
            with engine.connect() as conn:
                conn.exec_driver_sql(f"CREATE DATABASE {name}")
        finally:
            engine.dispose()
        return self.url(name)


@pytest.fixture(scope="session")
def postgres():
    """The session's :class:`PostgresServer` (started on first use, stopped at the end)."""
    server = PostgresServer().start()
    yield server
    server.stop()


STORE_BACKENDS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]


@pytest.fixture(params=STORE_BACKENDS)
def store_url(request, tmp_path):
    """A store URL for an empty store: SQLite in ``tmp_path``, or a fresh PostgreSQL database (marked ``postgres``)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'juicer.db'}"
    return request.getfixturevalue("postgres").new_database()
