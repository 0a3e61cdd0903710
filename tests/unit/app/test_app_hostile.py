"""Hostile and broken input: a poison webhook, deep JSON, image bombs, tokenless and cross-site callers."""

from __future__ import annotations

import base64
import json
import logging
import stat
import struct
import zlib
from pathlib import Path

import pytest

from app.worker.scheduler import process_webhook_events
from app.store import NewItem
from tests.support.images import png
from tests.unit.app.conftest import COLOURS, delivered_as_task

PROBLEM = "application/problem+json"
PAYLOADS = Path(__file__).parents[1] / "annotation" / "payloads"


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def png_header(width: int, height: int, extra: bytes = b"") -> bytes:
    """A valid PNG claiming width x height pixels, with a tiny (truncated-in-effect) body."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    body = zlib.compress(b"\x00" * 4096)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + extra + chunk(b"IDAT", body) + chunk(b"IEND", b"")


def good_webhook(item_id: str, annotation_id: int, label: str, updated_at: str = "2026-11-28T21:19:34Z") -> dict:
    payload = json.loads((PAYLOADS / "annotation_created.json").read_text())
    payload["task"]["data"]["item_id"] = item_id
    payload["annotation"]["id"] = annotation_id
    payload["annotation"]["result"][0]["value"]["choices"] = [label]
    payload["annotation"]["updated_at"] = updated_at
    payload["project"]["id"] = payload["annotation"]["project"] = 1  # juicer's own project (conftest's FakeProject)
    return payload


# -- the poison webhook -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    "poison",
    [
        {"action": "ANNOTATION_CREATED", "annotation": {"id": "x"}},
        {"action": "ANNOTATION_CREATED", "annotation": {"id": 1, "task": "not-a-number"}, "task": {"data": {"item_id": "p1"}}},
        {"action": "ANNOTATIONS_DELETED", "annotations": [{"id": "y"}]},
        {"action": "ANNOTATION_UPDATED", "annotation": {"id": 2, "updated_at": "yesterday"}, "task": {"data": {"item_id": "p1"}}},
        {"action": "ANNOTATION_CREATED", "annotation": {"id": 3, "task": [1]}, "task": {"data": {"item_id": "p1"}}},
    ],
)
def test_a_poison_webhook_is_marked_failed_and_the_good_ones_behind_it_are_applied(services, poison):
    services.store.add_items([NewItem("p1", "h1", "pool/1", "pool", "images/p1.png")])
    delivered_as_task(services.store, "p1", 7)  # the task good_webhook's recorded body is on
    bad = services.store.record_event(poison)
    good = good_webhook("p1", 11, "red")
    services.desk.hold(good)
    services.store.record_event(good)
    assert process_webhook_events(services) == 1
    assert services.store.pending_events() == []
    [row] = [event for event in services.store.failed_events() if event.id == bad]
    assert row.error
    assert services.store.get_item("p1").label.label == "red"


# -- the webhook doors: small and bounded -----------------------------------------------------------
def webhook_app(services, **service):
    from app import create_app

    services.settings = services.settings.model_copy(update={"service": services.settings.service.model_copy(update=service)})
    return create_app(services=services).test_client()


SECRET = {"X-Juicer-Secret": "hook-secret-123"}


@pytest.mark.parametrize(("path", "headers"), [("/label-studio-ml/webhook", {}), ("/v1/webhooks/label-studio", SECRET)])
def test_a_webhook_body_over_the_limit_is_a_413(services, path, headers):
    client = webhook_app(services, webhook_max_bytes=8192)
    body = {"action": "ANNOTATION_CREATED", "annotation": {"id": 1}, "padding": "x" * 10_000}
    response = client.post(path, json=body, headers=headers)
    assert response.status_code == 413 and response.json["max_bytes"] == 8192
    assert services.store.pending_events() == []


@pytest.mark.parametrize(("path", "headers"), [("/label-studio-ml/webhook", {}), ("/v1/webhooks/label-studio", SECRET)])
def test_webhooks_without_the_token_are_rate_limited_per_address(services, path, headers):
    client = webhook_app(services, webhook_burst=2, webhook_rate_per_s=0.01)
    body = {"action": "ANNOTATION_CREATED", "annotation": {"id": 1}}
    assert [client.post(path, json=body, headers=headers).status_code for _ in range(2)] == [200, 200]
    refused = client.post(path, json=body, headers=headers)
    assert refused.status_code == 429 and int(refused.headers["Retry-After"]) > 0
    other = client.post(path, json=body, headers=headers, environ_base={"REMOTE_ADDR": "10.0.0.9"})
    assert other.status_code == 200  # another source has its own bucket


def test_pending_events_are_capped_for_callers_without_the_token(services):
    client = webhook_app(services, max_pending_events=2)
    body = {"action": "ANNOTATION_CREATED", "annotation": {"id": 1}}
    assert [client.post("/label-studio-ml/webhook", json=body).status_code for _ in range(2)] == [200, 200]
    full = client.post("/v1/webhooks/label-studio", json=body, headers=SECRET)
    assert full.status_code == 503 and full.headers["Retry-After"]
    with_token = client.post("/label-studio-ml/webhook", json=body, headers={"Authorization": "Bearer s3cret"})
    assert with_token.status_code == 200


def test_processed_webhook_events_are_deleted_after_the_retention_period(services):
    from datetime import timedelta

    from app.core.retention import forget_events
    from app.store import utcnow

    done = services.store.record_event({"action": "ANNOTATION_CREATED"})
    waiting = services.store.record_event({"action": "ANNOTATION_CREATED"})
    services.store.mark_event(done, error="EventNotServedError: elsewhere", dropped=True)
    assert forget_events(services.store, keep_events_days=1) == 0  # processed just now: kept
    assert services.store.forget_events(utcnow() + timedelta(seconds=1)) == 1
    assert [event.id for event in services.store.pending_events()] == [waiting]
    assert services.store.event_counts() == {"pending": 1, "failed": 0, "dropped": 1}  # the count outlives the row


# -- deep or huge JSON ------------------------------------------------------------------------------
@pytest.mark.parametrize("path", ["/v1/predict", "/v1/items", "/v1/labels", "/v1/retrain", "/v1/webhooks/label-studio"])
def test_deeply_nested_json_is_a_400_while_parsing(client, trained, path):
    body = '{"images": ' + "[" * 5000 + "]" * 5000 + "}"
    response = client.post(path, data=body, content_type="application/json", headers={"X-Juicer-Secret": "hook-secret-123"})
    assert response.status_code == 400, response.get_data(as_text=True)
    assert response.mimetype == PROBLEM and "deep" in response.json["detail"]


def test_brackets_inside_strings_do_not_count_as_depth(client, trained):
    response = client.post("/v1/predict", json={"images": [b64(png(COLOURS["red"]))], "note": "[" * 500})
    assert response.status_code == 200, response.json


# -- image bombs ------------------------------------------------------------------------------------
def test_an_image_bomb_is_refused_from_its_header_without_decoding(client, trained, monkeypatch):
    from PIL import ImageFile

    loads = []
    real_load = ImageFile.ImageFile.load

    def spy(image, *args, **kwargs):
        loads.append(image.size)
        return real_load(image, *args, **kwargs)

    monkeypatch.setattr(ImageFile.ImageFile, "load", spy)
    response = client.post("/v1/predict", json={"image": b64(png_header(13_000, 13_000))})
    assert response.status_code == 413, response.get_data(as_text=True)
    assert response.json["type"].endswith("image-too-large")
    assert (13_000, 13_000) not in loads  # refused from the header: no pixel (and no EXIF hunt) was decoded


def test_the_pixel_budget_is_per_request_not_only_per_image(client, trained, services):
    limit = services.settings.service.max_request_pixels
    side = int((limit / 3) ** 0.5) + 1  # each image is under the per-image limit, three together are over the budget
    assert side * side <= services.settings.learner.max_image_pixels
    images = [b64(png_header(side, side)) for _ in range(3)]
    response = client.post("/v1/predict", json={"images": images})
    assert response.status_code == 413, response.get_data(as_text=True)
    assert response.json["type"].endswith("too-many-pixels")


# -- auth by default --------------------------------------------------------------------------------
def _app_with(services, **service):
    from app import create_app
    from app.core.secrets import resolve_secrets

    validated = type(services.settings.service).model_validate({**services.settings.service.model_dump(), **service})
    services.settings = resolve_secrets(services.settings.model_copy(update={"service": validated}))
    return create_app(services=services)


def test_without_a_configured_token_one_is_generated_into_the_data_folder(services, caplog):
    caplog.set_level(logging.INFO)
    app = _app_with(services, api_token=None)
    path = services.data_dir / "secrets" / "api-token"
    token = path.read_text().strip()
    assert len(token) >= 32 and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert str(path) in caplog.text and token not in caplog.text
    client = app.test_client()
    assert client.post("/v1/retrain?force=true").status_code == 401
    assert client.get("/v1/models", headers={"Authorization": f"Bearer {token}"}).status_code == 200
    again = _app_with(services, api_token=None)  # a restart keeps the same token
    assert again.test_client().get("/v1/models", headers={"Authorization": f"Bearer {token}"}).status_code == 200


def test_api_token_none_turns_auth_off_with_a_warning(services, caplog):
    app = _app_with(services, api_token="none")
    assert "authentication is OFF" in caplog.text
    assert app.test_client().get("/v1/models").status_code == 200
    assert not (services.data_dir / "secrets" / "api-token").exists()


def test_label_studio_secrets_are_generated_and_never_shipped(tmp_path):
    from app.core.secrets import label_studio_secrets
    from config import load_settings

    settings = load_settings(environ={}, data_dir=tmp_path)
    first = label_studio_secrets(settings)
    assert first.password and first.token and first.webhook_secret
    assert len({first.password, first.token, first.webhook_secret}) == 3
    assert "change-me" not in first.token and "change-me" not in first.webhook_secret
    for name in ("label-studio-password", "label-studio-token", "webhook-secret"):
        assert stat.S_IMODE((tmp_path / "secrets" / name).stat().st_mode) == 0o600
    assert label_studio_secrets(settings) == first  # the same on the next start
    configured = load_settings(environ={}, data_dir=tmp_path, label_studio={"password": "chosen-password"})
    assert label_studio_secrets(configured).password == "chosen-password"


def test_label_studio_gets_its_secrets_through_the_environment_not_argv(tmp_path):
    from annotation.launcher import LabelStudioLauncher

    server = LabelStudioLauncher(
        tmp_path / "venv", tmp_path / "data", tmp_path / "images", port=18080, username="a@b.test",
        password="password-xyz", token="token-xyz-123",
    )  # fmt: skip
    command = " ".join(server.command())
    assert "password-xyz" not in command and "token-xyz-123" not in command
    env = server.environment()
    assert env["LABEL_STUDIO_PASSWORD"] == "password-xyz" and env["LABEL_STUDIO_USER_TOKEN"] == "token-xyz-123"
    assert env["LABEL_STUDIO_SSRF_PROTECTION_ENABLED"] == "true"
    assert env["USE_DEFAULT_BANNED_SUBNETS"] == "false"
    banned = env["USER_ADDITIONAL_BANNED_SUBNETS"].split(",")
    assert "127.0.0.0/8" not in banned and "10.0.0.0/8" in banned and "169.254.0.0/16" in banned


# -- browser-originated writes ----------------------------------------------------------------------
def test_a_write_from_another_origin_is_refused(client, trained):
    response = client.post("/v1/retrain", headers={"Origin": "https://evil.example"})
    assert response.status_code == 403 and response.mimetype == PROBLEM
    assert response.json["type"].endswith("cross-origin")
    same = client.post("/v1/predict", json={"image": b64(png(COLOURS["red"]))}, headers={"Origin": "http://localhost"})
    assert same.status_code == 200, same.json
    assert client.get("/v1/models", headers={"Origin": "https://evil.example"}).status_code == 200  # reads are not writes


def test_allowed_origins_let_a_listed_site_write(services, trained):
    app = _app_with(services, api_token="s3cret", allowed_origins=["https://ui.example"])
    client = app.test_client()
    client.environ_base["HTTP_AUTHORIZATION"] = "Bearer s3cret"
    response = client.post("/v1/predict", json={"image": b64(png(COLOURS["red"]))}, headers={"Origin": "https://ui.example"})
    assert response.status_code == 200, response.json


# -- the Host header (DNS rebinding) ----------------------------------------------------------------
@pytest.mark.parametrize(
    "host", ["evil.example", "evil.example:8000", "localhost.evil.example", "127.0.0.1.nip.io", "evil.example@localhost",
             "localhost:8000/x", "[::2]", "", "local host"],
)  # fmt: skip
def test_a_request_naming_another_host_is_refused(client, host):
    for path in ("/healthz", "/v1/models", "/label-studio-ml/health"):
        response = client.get(path, headers={"Host": host})
        assert response.status_code == 400 and response.mimetype == PROBLEM, (path, host)
        assert response.json["type"].endswith("host-not-allowed") and "service.allowed_hosts" in response.json["detail"]


@pytest.mark.parametrize("host", ["localhost", "localhost:8000", "127.0.0.1:8000", "[::1]:8000", "LOCALHOST.", "127.0.0.1"])
def test_the_names_a_loopback_service_is_reached_by_are_answered(client, host):
    assert client.get("/v1/models", headers={"Host": host}).status_code == 200


@pytest.mark.parametrize(
    "service, answered, refused",
    [
        ({"host": "0.0.0.0", "public_url": "http://juicer:8000"}, ["juicer:8000", "localhost:8000", "127.0.0.1"], ["evil.example", "10.0.0.5"]),
        ({"host": "10.0.0.5"}, ["10.0.0.5:8000"], ["localhost", "127.0.0.1", "evil.example"]),
        ({"host": "10.0.0.5", "allowed_hosts": ["Juicer.Example.org"]}, ["juicer.example.org"], ["10.0.0.5", "localhost"]),
        ({"host": "10.0.0.5", "allowed_hosts": ["*"]}, ["evil.example", "10.0.0.5"], []),
    ],
)  # fmt: skip
def test_allowed_hosts_default_to_the_bind_address_and_public_url(services, service, answered, refused):
    client = _app_with(services, api_token="s3cret", **service).test_client()
    for host in answered:
        assert client.get("/healthz", headers={"Host": host}).status_code == 200, host
    for host in refused:
        assert client.get("/healthz", headers={"Host": host}).status_code == 400, host


# -- public paths -----------------------------------------------------------------------------------
def test_metrics_and_report_can_be_put_behind_the_token(services, trained):
    app = _app_with(services, api_token="s3cret", public_paths=["/healthz", "/readyz"])
    client = app.test_client()
    assert client.get("/metrics").status_code == 401
    assert client.get("/report").status_code == 401
    assert client.get("/healthz").status_code == 200
    assert client.get("/metrics", headers={"Authorization": "Bearer s3cret"}).status_code == 200


def test_metrics_do_not_label_by_invented_methods(client, trained):
    for method in ("FOO", "BAR", "BAZ"):
        client.open("/v1/models", method=method)
    text = client.get("/metrics").get_data(as_text=True)
    assert 'method="FOO"' not in text and 'method="BAR"' not in text


def test_a_label_studio_made_by_an_older_juicer_keeps_its_login(tmp_path, caplog):
    from app.core.secrets import label_studio_secrets
    from config import load_settings

    (tmp_path / "label-studio").mkdir()
    (tmp_path / "label-studio" / "label_studio.sqlite3").write_bytes(b"")  # its token was fixed at its first start
    found = label_studio_secrets(load_settings(environ={}, data_dir=tmp_path))
    assert found.token == "juicer-dev-token-change-me" and found.password == "juicer-admin"
    assert "change it" in caplog.text and found.webhook_secret != "juicer-webhook-secret-change-me"


def test_a_job_id_past_64_bits_is_a_404_not_an_overflow(client):
    response = client.get("/v1/jobs/999999999999999999999")  # found by benchmarks/bad_inputs.py: it was a 500
    assert response.status_code == 404 and response.mimetype == PROBLEM
