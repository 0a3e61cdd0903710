"""Unauthenticated doors are small and bounded (issue 21, holes 4 and 8): oversized and malformed webhook bodies
are refused with a 4xx and store nothing, and a request for a foreign ``Host`` is a 400."""

from __future__ import annotations

import json

import httpx
import pytest

from annotation.webhooks import SECRET_HEADER
from tests.integration.hostile.conftest import Hostile, event, walk_files

pytestmark = [pytest.mark.integration, pytest.mark.hostile]

MB = 1024 * 1024
NOW = "2026-12-05T12:00:00Z"


def _state_bytes(hostile: Hostile) -> int:
    """Bytes of every file in the data folder (the store, its WAL, logs; links not followed)."""
    return sum(path.stat().st_size for path in walk_files(hostile.data_dir))


def _oversized(megabytes: int) -> bytes:
    body = event("ANNOTATION_CREATED", 1, 1, "x", "x", NOW)
    body["annotation"]["padding"] = "A" * (megabytes * MB)
    return json.dumps(body).encode()


def _post(client: httpx.Client, path: str, content: bytes) -> str:
    """The answer's status, or how the connection ended when juicer stopped reading early."""
    try:
        return str(client.post(path, content=content, headers={"Content-Type": "application/json"}).status_code)
    except httpx.HTTPError as exc:  # refused before the whole body was read: the server closed the connection
        return type(exc).__name__


def test_three_20_mb_bodies_are_refused_and_stored_nowhere(hostile: Hostile) -> None:
    """Hole 4: 3 x 20 MB to the ML-backend webhook (no credentials), 1 more to juicer's own (with the secret)."""
    before = _state_bytes(hostile)
    body = _oversized(20)
    secret = hostile.secret_values()["webhook-secret"]
    with hostile.juicer() as anonymous, hostile.juicer(**{SECRET_HEADER: secret}) as member:
        answers = [_post(anonymous, "/label-studio-ml/webhook", body) for _ in range(3)]
        answers.append(_post(member, "/v1/webhooks/label-studio", body))
    grown = _state_bytes(hostile) - before
    assert all(not a.isdigit() or 400 <= int(a) < 500 for a in answers), f"answers {answers}"
    assert grown < 5 * MB, f"the data folder grew {grown / MB:.0f} MB (answers {answers})"


MALFORMED = {
    "task.id not an integer": {"task": {"id": "abc", "data": {}}, "project": {"id": 1}},
    "annotation.id not an integer": {"annotation": {"id": "abc", "result": []}},
    "annotation not an object": {"annotation": "abc"},
    "task.data not an object": {"task": {"id": 1, "data": "abc"}, "project": {"id": 1}},
    "project.id an object": {"project": {"id": {"a": 1}}, "task": {"id": 1, "data": {}}},
    "annotation.updated_at not a time": {"annotation": {"id": 1, "task": 1, "updated_at": "yesterday", "result": []}},
}


@pytest.mark.parametrize("field", sorted(MALFORMED))
def test_a_malformed_field_on_the_ml_backend_webhook_is_a_4xx(hostile: Hostile, field: str) -> None:
    """Hole 8: every malformed field of an unauthenticated event is the caller's mistake, not a 500 nor recorded."""
    body = event("ANNOTATION_CREATED", 1, 1, "x", hostile.classes[0], NOW)
    body.update(MALFORMED[field])
    with hostile.juicer() as client:
        answer = client.post("/label-studio-ml/webhook", json=body)
    assert 400 <= answer.status_code < 500, (answer.status_code, answer.text[:300])


def test_a_malformed_event_with_the_secret_is_a_4xx(hostile: Hostile) -> None:
    """The same on juicer's own door: ``task.id: "abc"`` is refused at the door, not recorded to fail later."""
    body = event("ANNOTATION_CREATED", 1, "abc", "x", hostile.classes[0], NOW)
    with hostile.juicer(**{SECRET_HEADER: hostile.secret_values()["webhook-secret"]}) as client:
        answer = client.post("/v1/webhooks/label-studio", json=body)
    assert 400 <= answer.status_code < 500, (answer.status_code, answer.text[:300])


@pytest.mark.parametrize("path", ["/healthz", "/v1/models", "/label-studio-ml/health", "/metrics"])
def test_a_foreign_host_header_is_a_400(hostile: Hostile, path: str) -> None:
    """Hole 8: a DNS-rebinding page reaches loopback juicer under its own host name: refused, whatever the path;
    the bind address is still served."""
    auth = {"Authorization": f"Bearer {hostile.service.token}"}
    with hostile.juicer(**auth) as client:
        for host in ("evil.example", f"evil.example:{hostile.service.port}", f"127.0.0.1.evil.example:{hostile.service.port}"):
            answer = client.get(path, headers={"Host": host})
            assert answer.status_code == 400, (host, answer.status_code, answer.text[:200])
        assert client.get(path, headers={"Host": f"127.0.0.1:{hostile.service.port}"}).status_code == 200
