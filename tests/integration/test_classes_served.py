"""`juicer classes add` while `juicer serve --workers 2` runs: no restart, every worker takes labels of the new class,
and the service's Label Studio project offers it."""

from __future__ import annotations

import base64
import subprocess
import sys

import httpx
import pytest

from annotation.labelconfig import parse_label_config
from tests.support.images import png
from tests.support.served import REPO, ServedJuicer, data_folder, service_env

pytestmark = pytest.mark.integration


def test_a_class_added_from_the_command_line_reaches_every_worker_and_the_project(free_port, label_studio):
    # Label Studio serves local files only under its document root: the data folder lives there.
    data_dir = data_folder(label_studio.files_root.parent / f"classes-{label_studio.project_title('d').split()[-1]}")
    port = free_port()
    title = label_studio.project_title("served-classes")
    env = service_env(data_dir, port, label_studio, title)
    with ServedJuicer(data_dir, port, env, args=["--demo-pool", "20", "--holdout", "20", "--workers", "2"]) as service:
        refused = service.client().post("/v1/labels", json={"labels": [{"image": base64.b64encode(png((200, 40, 40))).decode(), "label": "Sock"}]})
        assert refused.status_code == 422 and "juicer classes add" in refused.json()["detail"]

        added = subprocess.run([sys.executable, "-m", "app.cli", "classes", "add", "Sock"], cwd=REPO, env=env,
                               capture_output=True, text=True, timeout=120)  # fmt: skip
        assert added.returncode == 0, added.stdout + added.stderr
        assert "added 'Sock'" in added.stdout and f"Label Studio project {title!r}" in added.stdout

        for attempt in range(8):  # a new connection each time: the requests spread over both workers
            with httpx.Client(base_url=service.url, headers={"Authorization": f"Bearer {service.token}", "Connection": "close"},
                              timeout=60) as client:  # fmt: skip
                assert client.get("/v1/classes").json()["classes"][-1] == "Sock"
                image = base64.b64encode(png((200, 40, 40), seed=attempt)).decode()
                response = client.post("/v1/labels", json={"labels": [{"image": image, "label": "Sock"}]})
                assert response.status_code == 201, response.text

    with label_studio.desk() as desk:
        [project] = [p for p in desk.client.sdk.projects.list(title=title, request_options=desk.client.opts) if p.title == title]
        assert parse_label_config(project.label_config).choices[-1] == "Sock"
