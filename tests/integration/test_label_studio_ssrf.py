"""Label Studio's SSRF protection as juicer starts it: only juicer's own address is opened (issue 21, hole 6).

A member (signed up through the invite link, as annotators are) asks Label Studio to import tasks from URLs on
other loopback addresses, the private network and the cloud metadata address: each is refused and nothing is
fetched, while webhooks still reach a receiver on juicer's address (127.0.0.1 in these tests). What the one opened
address still allows is in docs/security.md ("Label Studio's outbound requests").
"""

from __future__ import annotations

import time
from typing import Iterator

import httpx
import pytest

from annotation.models import ReviewRequest
from tests.support.canary import Canary

CLASSES = ["cat", "cup", "person"]


@pytest.fixture
def other_local_server() -> Iterator[tuple[str, list[str]]]:
    """A tasks file served on 127.0.0.2 (loopback, but not juicer's address); the paths it was asked for."""
    try:
        canary = Canary("127.0.0.2")
    except OSError as exc:  # not every system routes all of 127.0.0.0/8 to loopback (macOS does not)
        pytest.skip(f"cannot listen on 127.0.0.2: {exc}")
    with canary:
        yield canary.url, canary.requests


def test_a_members_url_import_is_refused_off_juicers_address_while_webhooks_reach_it(
    label_studio, other_local_server, webhook_receiver
):
    other_url, asked = other_local_server
    mallory = label_studio.invite(f"mallory-{time.monotonic_ns()}@juicer.test")
    with label_studio.desk() as admin:
        project = admin.ensure_project(CLASSES, label_studio.project_title("ssrf"))
        admin.register_webhook(project, webhook_receiver.url, "hook-secret-for-tests")
        [task] = admin.send_for_review(project, [ReviewRequest("ssrf", label_studio.images["coffee"], "cat", 0.5, "v1")])
    with httpx.Client(base_url=label_studio.url, headers={"Authorization": f"Token {mallory}"}, timeout=30) as member:
        for url in (f"{other_url}/tasks.json", "http://10.0.0.1/tasks.json", "http://169.254.169.254/latest/meta-data/"):
            response = member.post(f"/api/projects/{project.id}/import", data={"url": url})
            assert response.status_code == 400, (url, response.status_code, response.text[:300])
        tasks = member.get("/api/tasks", params={"project": project.id}).json()
    assert asked == []  # refused before any connection
    assert "canary-" not in str(tasks)
    with label_studio.desk(mallory) as desk:
        desk.submit_annotation(task.task_id, "cup")  # a real answer: its webhook still reaches juicer's address
    _, created = webhook_receiver.wait_for(lambda body: body.get("action") == "ANNOTATION_CREATED", timeout_s=30)
    assert created["task"]["id"] == task.task_id
