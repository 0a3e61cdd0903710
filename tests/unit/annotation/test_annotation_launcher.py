"""LabelStudioLauncher's command line and environment (the real start is in the integration tests)."""

from __future__ import annotations

from pathlib import Path

from annotation.launcher import LabelStudioLauncher, document_root, launcher_from_settings
from config import load_settings


def make_launcher(tmp_path: Path) -> LabelStudioLauncher:
    return LabelStudioLauncher(
        tmp_path / "venv", tmp_path / "data", tmp_path / "files" / "images",
        port=18080, username="a@b.test", password="password1", token="tok12345",
    )  # fmt: skip


def test_environment_drops_the_names_label_studio_misreads(tmp_path, monkeypatch):
    for name in ("HOST", "USERNAME", "PASSWORD", "PORT"):
        monkeypatch.setenv(name, "wrong")
    env = make_launcher(tmp_path).environment()
    assert not {"HOST", "USERNAME", "PASSWORD", "PORT"} & set(env)
    assert env["LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT"] == str((tmp_path / "files").resolve())
    assert env["LABEL_STUDIO_SSRF_PROTECTION_ENABLED"] == "true"  # on, with juicer's own network unbanned
    assert env["LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED"] == "true"


def test_command_binds_loopback_with_a_legacy_token(tmp_path):
    command = make_launcher(tmp_path).command()
    assert command[:2] == [str(tmp_path / "venv" / "bin" / "label-studio"), "start"]
    assert command[command.index("--internal-host") + 1] == "127.0.0.1"
    assert "tok12345" not in command and "password1" not in command  # secrets travel in the environment
    assert "--enable-legacy-api-token" in command and "--no-browser" in command


def test_a_data_folder_without_a_server_is_not_running(tmp_path):
    server = make_launcher(tmp_path)
    (tmp_path / "data").mkdir()
    server.pidfile.write_text("999999999\n")  # no such process
    assert not server.running and server.pid is None
    assert server.stop() is False
    assert server.url == "http://127.0.0.1:18080"


def test_document_root_is_the_parent_of_files_root(tmp_path):
    assert document_root(tmp_path / "images") == tmp_path.resolve()


def test_launcher_from_settings_defaults_under_the_data_dir(tmp_path):
    settings = load_settings(
        environ={}, data_dir=tmp_path, label_studio={"port": 9123, "password": "password1", "token": "tok12345"}
    )
    server = launcher_from_settings(settings)
    assert server.data_dir == (tmp_path / "label-studio").resolve()
    assert server.files_root == (tmp_path / "files" / "images").resolve()
    # Label Studio's document root holds the images folder only: not the store, the secrets, nor its own data
    assert document_root(server.files_root) == settings.files_dir.resolve() != tmp_path.resolve()
    assert server.port == 9123 and server.username == settings.label_studio.username


def test_the_desk_goes_to_the_port_label_studio_really_took_unless_a_url_is_given(tmp_path):
    from annotation.desk import desk_from_settings

    settings = load_settings(environ={}, data_dir=tmp_path, label_studio={"port": 9123, "token": "tok12345"})
    (tmp_path / "label-studio").mkdir()
    (tmp_path / "label-studio" / "label-studio.port").write_text("9124\n")  # 9123 was busy
    assert desk_from_settings(settings).url == "http://127.0.0.1:9124"
    assert desk_from_settings(settings, url="http://127.0.0.1:7000").url == "http://127.0.0.1:7000"
    configured = load_settings(environ={}, data_dir=tmp_path, label_studio={"url": "http://ls.test:8080", "token": "tok12345"})
    assert desk_from_settings(configured).url == "http://ls.test:8080"
    assert desk_from_settings(settings).files_root == settings.images_dir.resolve()


FAKE_LABEL_STUDIO = '''#!{python}
# Stands in for label-studio: like the real one, it takes another port when asked for a busy one, says so in
# its log line, and answers /health.
import json, sys
from http.server import BaseHTTPRequestHandler, HTTPServer
args = sys.argv[1:]
port = int(args[args.index("--port") + 1]) + 1

class Health(BaseHTTPRequestHandler):
    def do_GET(self):
        body = json.dumps({{"status": "UP"}}).encode()
        self.send_response(200); self.send_header("Content-Length", str(len(body))); self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass

server = HTTPServer(("127.0.0.1", port), Health)
print(f"Starting development server at http://127.0.0.1:{{port}}/", flush=True)
server.serve_forever()
'''


def fake_label_studio(tmp_path: Path) -> tuple[Path, int]:
    """A venv whose ``label-studio`` is :data:`FAKE_LABEL_STUDIO`, and a port to ask it for: free, and the next one
    (where the fake really binds) free too (a port whose neighbour was taken failed CI with EADDRINUSE once)."""
    import socket
    import sys

    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    fake = venv / "bin" / "label-studio"
    fake.write_text(FAKE_LABEL_STUDIO.format(python=sys.executable))
    fake.chmod(0o755)
    for _ in range(100):
        with socket.socket() as probe, socket.socket() as neighbour:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
            try:
                neighbour.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
            return venv, port
    raise AssertionError("no free pair of neighbouring ports on 127.0.0.1")


def test_start_reads_the_port_it_really_bound_and_stop_ends_it(tmp_path):
    venv, asked = fake_label_studio(tmp_path)
    server = LabelStudioLauncher(
        venv, tmp_path / "data", tmp_path / "files" / "images", port=asked, username="a@b.test",
        password="password1", token="tok12345",
    )  # fmt: skip
    try:
        url = server.start(wait=True, timeout_s=20)
        assert url == f"http://127.0.0.1:{asked + 1}" and server.running and server.healthy()
        again = LabelStudioLauncher(venv, tmp_path / "data", tmp_path / "files" / "images", port=asked, username="a@b.test", password="password1", token="tok12345")
        assert again.running and again.url == url  # another process finds it through the data folder
    finally:
        assert server.stop() is True
    assert not server.running and not server.pidfile.exists()


def test_only_juicers_own_address_is_carved_out_of_label_studios_banned_subnets(tmp_path):
    import ipaddress

    from annotation.launcher import DEFAULT_BANNED_SUBNETS, banned_subnets

    banned = [ipaddress.ip_network(s) for s in banned_subnets("127.0.0.1")]
    assert not any(ipaddress.ip_address("127.0.0.1") in net for net in banned)
    for still_refused in ("127.0.0.2", "127.255.255.254", "10.0.0.1", "169.254.169.254", "192.168.1.1", "::1"):
        assert any(ipaddress.ip_address(still_refused) in net for net in banned), still_refused
    assert len(banned_subnets("8.8.8.8")) == len(DEFAULT_BANNED_SUBNETS)  # a public address: nothing to open


def test_the_server_juicer_runs_may_call_juicer_as_its_ml_backend(tmp_path):
    settings = load_settings(environ={}, data_dir=tmp_path, service={"host": "127.0.0.1", "port": 8123})
    env = launcher_from_settings(settings).environment()
    assert env["USE_DEFAULT_BANNED_SUBNETS"] == "false"
    subnets = env["USER_ADDITIONAL_BANNED_SUBNETS"].split(",")
    assert "127.0.0.0/8" not in subnets and "10.0.0.0/8" in subnets and "127.0.0.2/31" in subnets
    assert "LABEL_STUDIO_ML_BLOCK_LOCAL_IP" not in env  # the check stays on, against the narrowed list


def test_a_label_studio_serving_the_whole_data_folder_is_restarted_on_the_images_only(tmp_path):
    from annotation.launcher import _document_root_of

    venv, asked = fake_label_studio(tmp_path)
    common = dict(port=asked, username="a@b.test", password="password1", token="tok12345")
    old = LabelStudioLauncher(venv, tmp_path / "data", tmp_path / "images", **common)  # an older juicer's layout
    new = LabelStudioLauncher(venv, tmp_path / "data", tmp_path / "files" / "images", **common)
    try:
        old.start(wait=True, timeout_s=20)
        first = old.pid
        assert _document_root_of(first) == str(tmp_path.resolve())
        new.start(wait=True, timeout_s=20)
        assert new.pid != first and _document_root_of(new.pid) == str((tmp_path / "files").resolve())
        status = Path(f"/proc/{new.pid}/status").read_text()
        assert "Umask:\t0077" in status  # its database and data folder are its user's alone
    finally:
        new.stop()
        old.stop()


def test_only_juicers_one_address_is_opened_by_default_and_none_without_one(tmp_path, monkeypatch):
    import ipaddress

    banned = [ipaddress.ip_network(s) for s in make_launcher(tmp_path).environment()["USER_ADDITIONAL_BANNED_SUBNETS"].split(",")]
    opened = [a for a in ("127.0.0.1", "127.0.0.2", "127.1.2.3") if not any(ipaddress.ip_address(a) in net for net in banned)]
    assert opened == ["127.0.0.1"]  # not the whole of 127.0.0.0/8
    monkeypatch.setenv("USE_DEFAULT_BANNED_SUBNETS", "false")  # whatever the caller's environment says
    by_name = load_settings(environ={}, data_dir=tmp_path, service={"host": "juicer.internal"})
    env = launcher_from_settings(by_name).environment()  # a host name: no address to open, Label Studio's list whole
    assert env["USE_DEFAULT_BANNED_SUBNETS"] == "true" and env["LABEL_STUDIO_SSRF_PROTECTION_ENABLED"] == "true"
