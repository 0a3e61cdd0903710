"""Run a real Label Studio server from its own venv, on 127.0.0.1, with its data in a folder of ours.

Used by ``juicer labelstudio start`` (and so ``make serve``), by the integration tests' session fixture and by
the benchmarks. The process is started detached (its own session), so it outlives the Python that started it;
``stop()`` finds it again through the pidfile in the data folder. Restarting on the same data folder keeps the
users, projects and the API token.

Label Studio's quirks handled here: it reads plain ``HOST``/``USERNAME``/``PASSWORD``/``PORT`` as fallbacks
(unset); a busy port is silently replaced by another (the real one is read from its log line); a preset token is
refused unless legacy tokens are enabled on the first start; a local-files storage may not point at the
document root itself, so the document root is the parent of ``files_root`` and projects get a storage on ``files_root`` (see :class:`annotation.desk.LabelStudioDesk`).
That parent must hold nothing but ``files_root``: any project member may add a local-files storage anywhere under
the document root and read what is there (juicer's is ``<data_dir>/files``, see :mod:`app.core.datadir`).
The process runs with umask 077, so its database and data folder are its user's alone. A server still running with
another document root (an older juicer's: the whole data folder) is restarted by ``start()`` on the new one.

Secrets never reach the command line (``ps`` and ``/proc/<pid>/cmdline`` show it to every user): the password
and token go through the environment (``LABEL_STUDIO_PASSWORD``, ``LABEL_STUDIO_USER_TOKEN``). SSRF protection
stays on: Label Studio 1.23.2 has no allow-list, no per-port rule and no switch for URL import apart from webhooks
(one banned list of networks serves both, and ``POST /api/ml`` through ``ML_BLOCK_LOCAL_IP``), so its default
list is replaced by the same list minus only juicer's own address, one ``/32`` (:func:`banned_subnets`;
127.0.0.1 here): webhooks and ML-backend calls reach juicer, every other loopback, private, link-local and reserved
address stays blocked. What that single address still lets a member's "import from URL" read is in
``docs/security.md`` ("Label Studio's outbound requests").
"""

from __future__ import annotations

import ipaddress
import logging
import os
import re
import signal
import subprocess
import time
from pathlib import Path
from typing import Callable

import httpx

from annotation.errors import LabelStudioUnavailable
from config import Settings

logger = logging.getLogger(__name__)

_STARTED = re.compile(r"Starting development server at http://[^:/]+:(\d+)/")
_PIDFILE = "label-studio.pid"
_PORTFILE = "label-studio.port"
#: Label Studio's files (its sqlite database holds the admin token and the webhook header) 0600, folders 0700.
PRIVATE_UMASK = 0o077


#: Label Studio 1.23.2's default SSRF list (``core/utils/io.py``, ``validate_ip``).
DEFAULT_BANNED_SUBNETS = (
    "0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16", "172.16.0.0/12", "192.0.0.0/24",
    "192.0.2.0/24", "192.88.99.0/24", "192.168.0.0/16", "198.18.0.0/15", "198.51.100.0/24", "203.0.113.0/24",
    "224.0.0.0/4", "233.252.0.0/24", "240.0.0.0/4", "255.255.255.255/32", "::/128", "::1/128", "::ffff:0:0/96",
    "::ffff:0:0:0/96", "64:ff9b::/96", "64:ff9b:1::/48", "100::/64", "2001:0000::/32", "2001:20::/28",
    "2001:db8::/32", "2002::/16", "fc00::/7", "fe80::/10", "ff00::/8",
)  # fmt: skip
#: The address juicer is reached on when Label Studio runs beside it on this machine (service.host's default).
JUICER_ADDRESS = "127.0.0.1"


def banned_subnets(allowed: str = JUICER_ADDRESS) -> list[str]:
    """Label Studio's default banned list with ``allowed`` cut out of the subnets that hold it, nothing else."""
    keep = ipaddress.ip_network(allowed)
    out: list[str] = []
    for text in DEFAULT_BANNED_SUBNETS:
        subnet = ipaddress.ip_network(text)
        if subnet.version != keep.version or not (keep.subnet_of(subnet) or subnet.subnet_of(keep)):
            out.append(text)
        elif keep.subnet_of(subnet) and keep != subnet:
            out.extend(str(part) for part in sorted(subnet.address_exclude(keep)))
    return out


def document_root(files_root: Path) -> Path:
    """Label Studio's LOCAL_FILES_DOCUMENT_ROOT for ``files_root``: its parent (a storage may not be the root), which
    must hold nothing else."""
    return Path(files_root).resolve().parent


class LabelStudioLauncher:
    """One Label Studio process: ``start()``, ``stop()``, ``running``, ``url``.

    ``username`` must be an email (Label Studio's login); ``token`` becomes the admin's legacy API token on the
    first start of a data folder and is kept afterwards.
    """

    def __init__(
        self,
        venv: Path,
        data_dir: Path,
        files_root: Path,
        *,
        port: int,
        username: str,
        password: str | None,
        token: str | None,
        log_path: Path | None = None,
        ml_backend_address: str | None = JUICER_ADDRESS,
    ) -> None:
        """``ml_backend_address``: juicer's own IP address, the only one cut out of Label Studio's banned subnets,
        so Label Studio may call it as an ML backend and send it webhooks; None: Label Studio's own list, whole."""
        self.venv = Path(venv).absolute()  # the process runs in data_dir: a relative path would miss
        self.data_dir = Path(data_dir).resolve()
        self.files_root = Path(files_root).resolve()
        self.ml_backend_address = ml_backend_address
        self.port = port
        self.username = username
        self.password = password
        self.token = token
        self.log_path = Path(log_path) if log_path else self.data_dir / "label-studio.log"
        self._actual_port: int | None = None
        self._progress: Callable[[float], None] | None = None

    # -- state ------------------------------------------------------------------------------------------------

    @property
    def pidfile(self) -> Path:
        """Where the running server's pid is kept (in the data folder)."""
        return self.data_dir / _PIDFILE

    @property
    def pid(self) -> int | None:
        """The pid of this data folder's Label Studio if it is alive, else None."""
        try:
            pid = int(self.pidfile.read_text().strip())
        except (OSError, ValueError):
            return None
        return pid if _is_label_studio(pid) else None

    @property
    def running(self) -> bool:
        """True while this data folder's server process is alive."""
        return self.pid is not None

    @property
    def url(self) -> str:
        """The base URL, with the port the server really bound (it may differ from the one asked for)."""
        port = self._actual_port
        if port is None:
            try:
                port = int((self.data_dir / _PORTFILE).read_text().strip())
            except (OSError, ValueError):
                port = self.port
        return f"http://127.0.0.1:{port}"

    def healthy(self, timeout_s: float = 2.0) -> bool:
        """True when ``GET /health`` answers ``{"status": "UP"}``."""
        from annotation.client import answers_up  # the desk imports this module lazily; import it lazily back

        with httpx.Client(base_url=self.url, timeout=timeout_s) as http:
            return answers_up(http)

    # -- start / stop -----------------------------------------------------------------------------------------

    def command(self) -> list[str]:
        """The ``label-studio start`` command line."""
        return [
            str(self.venv / "bin" / "label-studio"), "start", "--no-browser",
            "--internal-host", "127.0.0.1", "--port", str(self.port), "--data-dir", str(self.data_dir),
            "--username", self.username, "--enable-legacy-api-token",
        ]  # fmt: skip  (password and token travel in the environment: argv is world-readable)

    def environment(self) -> dict[str, str]:
        """The server's environment: ours minus the plain names Label Studio misreads, plus its settings."""
        env = {k: v for k, v in os.environ.items() if k not in ("HOST", "USERNAME", "PASSWORD", "PORT")}
        env.update(
            LABEL_STUDIO_BASE_DATA_DIR=str(self.data_dir),
            LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED="true",
            LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT=str(document_root(self.files_root)),
            LABEL_STUDIO_SSRF_PROTECTION_ENABLED="true",
            LABEL_STUDIO_LATEST_VERSION_CHECK="false",
            LABEL_STUDIO_DISABLE_SIGNUP_WITHOUT_LINK="true",  # people join through the invite link only
            PYTHONUNBUFFERED="1",  # the port line must reach the log at once
        )
        if self.ml_backend_address is not None:  # the same list minus juicer's own address (one /32 or /128)
            env.update(
                USE_DEFAULT_BANNED_SUBNETS="false",
                USER_ADDITIONAL_BANNED_SUBNETS=",".join(banned_subnets(self.ml_backend_address)),
            )
        else:
            env["USE_DEFAULT_BANNED_SUBNETS"] = "true"  # whatever our own environment says
        env.update({k: v for k, v in (("LABEL_STUDIO_PASSWORD", self.password), ("LABEL_STUDIO_USER_TOKEN", self.token)) if v})
        return env

    def start(self, wait: bool = True, timeout_s: float = 120, progress: Callable[[float], None] | None = None) -> str:
        """Start the server (or adopt the one already running on this data folder); return its URL.

        With ``wait``, block until ``/health`` is UP or raise :class:`LabelStudioUnavailable` (with the log's
        tail) when the process dies or ``timeout_s`` passes. ``progress`` is called with the seconds waited so far.
        """
        self._progress = progress
        pid = self.pid
        if pid is not None and _document_root_of(pid) not in (None, str(document_root(self.files_root))):
            # Started by an older juicer, with the whole data folder as its document root: restarted on the new one.
            logger.warning("Label Studio (pid %s) serves %s: restarting it to serve %s only", pid,
                           _document_root_of(pid), document_root(self.files_root))
            self.stop()
        if self.running:
            logger.info("Label Studio already running (pid %s) at %s", self.pid, self.url)
            if wait:
                self._wait_healthy(time.monotonic() + timeout_s, process=None, log_offset=0)
            return self.url
        if not self.password or not self.token:
            raise LabelStudioUnavailable(
                "no Label Studio password or token to start it with: set label_studio.password and .token, or let "
                "juicer generate them (app.core.secrets.resolve_secrets, as `juicer serve` and `juicer labelstudio` do)"
            )
        executable = self.venv / "bin" / "label-studio"
        if not executable.exists():
            raise LabelStudioUnavailable(f"no Label Studio at {executable}: create its venv with `make ls-venv`")
        self.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.files_root.mkdir(parents=True, exist_ok=True)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        (self.data_dir / _PORTFILE).unlink(missing_ok=True)
        self._actual_port = None
        log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        with open(self.log_path, "ab") as log:
            process = subprocess.Popen(
                self.command(), cwd=self.data_dir, env=self.environment(), stdin=subprocess.DEVNULL,
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True, umask=PRIVATE_UMASK,
            )  # fmt: skip
        self.pidfile.write_text(f"{process.pid}\n")
        logger.info("started Label Studio (pid %s), log %s", process.pid, self.log_path)
        if wait:
            try:
                self._wait_healthy(time.monotonic() + timeout_s, process=process, log_offset=log_offset)
            except LabelStudioUnavailable:
                self.stop()
                raise
        return self.url

    def _wait_healthy(self, deadline: float, process: subprocess.Popen | None, log_offset: int) -> None:
        started = time.monotonic()
        while time.monotonic() < deadline:
            if self._progress is not None:
                self._progress(time.monotonic() - started)
            if process is not None and process.poll() is not None:
                raise LabelStudioUnavailable(
                    f"Label Studio exited with code {process.returncode} while starting; its log ends:\n{self._log_tail()}"
                )
            if self._actual_port is None and process is not None:
                self._read_port(log_offset)
            if (self._actual_port is not None or process is None) and self.healthy():
                return
            time.sleep(0.25)
        raise LabelStudioUnavailable(
            f"Label Studio did not report healthy at {self.url} within the timeout; its log ends:\n{self._log_tail()}"
        )

    def _read_port(self, log_offset: int) -> None:
        try:
            with open(self.log_path, "rb") as log:
                log.seek(log_offset)
                text = log.read().decode(errors="replace")
        except OSError:
            return
        found = _STARTED.search(text)
        if found:
            self._actual_port = int(found.group(1))
            (self.data_dir / _PORTFILE).write_text(f"{self._actual_port}\n")
            if self._actual_port != self.port:
                logger.warning("port %s was busy: Label Studio bound %s instead", self.port, self._actual_port)

    def _log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self, timeout_s: float = 15) -> bool:
        """Stop the server by its pid: SIGTERM, then SIGKILL after ``timeout_s``. False if none was running."""
        pid = self.pid
        if pid is None:
            self.pidfile.unlink(missing_ok=True)
            return False
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and _alive(pid):
            time.sleep(0.1)
        if _alive(pid):
            logger.warning("Label Studio (pid %s) ignored SIGTERM for %.0f s: killing it", pid, timeout_s)
            os.kill(pid, signal.SIGKILL)
            while _alive(pid):
                time.sleep(0.05)
        self.pidfile.unlink(missing_ok=True)
        (self.data_dir / _PORTFILE).unlink(missing_ok=True)
        self._actual_port = None
        logger.info("stopped Label Studio (pid %s)", pid)
        return True


def _alive(pid: int) -> bool:
    try:
        # Reap it if it is our child (the test session's server), so it does not linger as a zombie.
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][:1]
        return state != "Z"
    except (OSError, IndexError):
        return True


def _document_root_of(pid: int) -> str | None:
    """The LOCAL_FILES_DOCUMENT_ROOT a running Label Studio was started with (None when it cannot be read)."""
    try:
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return None
    for entry in environ:
        name, _, value = entry.partition(b"=")
        if name == b"LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT":
            return value.decode(errors="replace")
    return None


def _is_label_studio(pid: int) -> bool:
    """True if ``pid`` is alive and is a label-studio process (not a recycled pid)."""
    if not _alive(pid):
        return False
    try:
        return b"label-studio" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def launcher_from_settings(settings: Settings) -> LabelStudioLauncher:
    """The server ``juicer labelstudio`` and ``make serve`` run, from ``settings.label_studio``."""
    ls = settings.label_studio
    return LabelStudioLauncher(
        venv=ls.venv,
        data_dir=ls.data_dir or settings.data_dir / "label-studio",
        files_root=settings.images_dir,
        port=ls.port,
        username=ls.username,
        password=ls.password,
        token=ls.token,
        ml_backend_address=juicer_address(settings),
    )


def juicer_address(settings: Settings) -> str | None:
    """The IP address Label Studio reaches juicer on: ``service.public_url``'s host, else ``service.host``.

    A wildcard bind (0.0.0.0) is reached on loopback by the Label Studio juicer runs; a host name is not an
    address (None: Label Studio's own rules stay, and connecting juicer as a backend needs them changed by hand).
    """
    from urllib.parse import urlsplit

    service = settings.service
    host = (urlsplit(service.public_url).hostname if service.public_url else None) or service.host
    if host in ("0.0.0.0", "::", "", "localhost"):
        return "127.0.0.1" if host != "::" else "::1"
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        logger.warning("service host %r is not an IP address: Label Studio keeps refusing private ML-backend URLs", host)
        return None
