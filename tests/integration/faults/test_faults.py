"""The fault suite: the real service (``juicer serve``: gunicorn, the real backbone) killed with SIGKILL mid-work,
Label Studio stopped and started under it, poison and forged webhooks. After each fault: every acknowledged
label is still there (counted), the last good model serves, and Label Studio holds one task per item.

The tests share one data folder and run in file order, each starting from what the one before left.
"""

from __future__ import annotations

import base64
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest

from tests.support.served import ServedJuicer, data_folder, service_env
from tests.support.images import png

pytestmark = [pytest.mark.integration, pytest.mark.faults]

SECRET = "fault-suite-secret"
DEADLINE_S = 8  # service.request_deadline_s of the suite's service (read_timeout_s 3)


def noise_png(seed: int) -> str:
    """A distinct image the demo model is unsure of (so it is decided ``review``), as base64."""
    return base64.b64encode(png(size=(28, 28), seed=seed)).decode()


class Ledger:
    """What the service acknowledged, to count after every fault."""

    def __init__(self) -> None:
        self.labels: dict[str, str] = {}  # item id -> label, acknowledged with 201
        self.reviews: set[str] = set()  # item ids acknowledged as decided "review"


@pytest.fixture(scope="module")
def world(free_port, label_studio):
    # Label Studio serves local files only under its document root: the data folder lives there.
    root = label_studio.files_root.parent / f"faults-{label_studio.project_title('d').split()[-1]}"
    data_dir = data_folder(root)
    port = free_port()
    title = label_studio.project_title("faults")
    env = service_env(data_dir, port, label_studio, title, JUICER_SERVICE__DELIVER_BATCH_SIZE="1",
                      JUICER_SERVICE__READ_TIMEOUT_S="3", JUICER_SERVICE__REQUEST_DEADLINE_S=str(DEADLINE_S))
    service = ServedJuicer(data_dir, port, env)
    service.start()
    try:
        yield service, Ledger(), label_studio, title
    finally:
        service.stop()
        if not label_studio.launcher.running:
            label_studio.launcher.start(wait=True, timeout_s=240)


def _classes(client: httpx.Client) -> list[str]:
    return list(client.get("/v1/models/current").json()["classes"])


ARTIFACT = Path(__file__).resolve().parents[3] / "test-artifacts" / "faults.txt"


def _record(line: str) -> None:
    """The counts after each fault, for the closing figures (``test-artifacts/faults.txt``)."""
    ARTIFACT.parent.mkdir(exist_ok=True)
    with ARTIFACT.open("a") as out:
        out.write(f"{time.strftime('%H:%M:%S')} {line}\n")


def _check_everything_acknowledged_is_there(service: ServedJuicer, ledger: Ledger) -> None:
    import inspect

    _record(f"{inspect.stack()[1].function}: {len(ledger.labels)} acknowledged labels and "
            f"{len(ledger.reviews)} acknowledged reviews, all checked present")  # fmt: skip
    with service.client() as client:
        for item_id, label in ledger.labels.items():
            item = client.get(f"/v1/items/{item_id}").json()
            assert item["label"] is not None and item["label"]["label"] == label, f"acknowledged label of {item_id} lost"
        for item_id in ledger.reviews:
            item = client.get(f"/v1/items/{item_id}").json()
            assert item["review"] is not None, f"acknowledged review of {item_id} lost"


def _check_last_good_model_serves(service: ServedJuicer) -> None:
    with service.client() as client:
        models = client.get("/v1/models").json()
        versions = [row["model_version"] for row in models["models"]]
        for version in versions:
            assert (service.data_dir / "models" / f"{version}.pkl").is_file(), f"{version} recorded without its file"
        assert models["current"] == versions[-1]
        response = client.post("/v1/predict", json={"image": noise_png(0)})
        assert response.status_code == 200 and response.json()["model_version"] == versions[-1]


def _pending(client: httpx.Client) -> int:
    text = client.get("/metrics").text
    line = next(line for line in text.splitlines() if line.startswith('juicer_review_tasks{status="pending"}'))
    return int(float(line.split()[-1]))


def _one_task_per_item(service: ServedJuicer, label_studio, title: str) -> Counter:
    with service.client() as client:
        classes = _classes(client)
    desk = label_studio.desk()
    project = desk.ensure_project(classes, title)  # the service's own project (idempotent: found by title)
    counts = Counter(task.item_id for task in desk.open_tasks(project))
    assert counts and max(counts.values()) == 1, f"items delivered twice: {[i for i, n in counts.items() if n > 1]}"
    return counts


def test_sigkill_in_the_middle_of_a_labels_batch_loses_no_acknowledged_label(world):
    service, ledger, _, _ = world
    with service.client() as client:
        pool = [row["id"] for row in client.get("/v1/items", params={"split": "pool", "limit": 40}).json()["items"]]
        classes = _classes(client)
    acknowledged = threading.Event()

    def post_labels() -> None:
        with service.client(timeout_s=10) as client:
            for index, item_id in enumerate(pool[:30]):
                label = classes[index % len(classes)]
                try:
                    response = client.post("/v1/labels", json={"labels": [{"item_id": item_id, "label": label}]})
                except httpx.HTTPError:
                    return  # the service is gone
                if response.status_code == 201:
                    ledger.labels[item_id] = label
                    if len(ledger.labels) >= 8:
                        acknowledged.set()

    writer = threading.Thread(target=post_labels)
    writer.start()
    assert acknowledged.wait(120), service.tail()
    service.kill()
    writer.join(60)
    assert 8 <= len(ledger.labels) <= 30
    service.start()
    _check_everything_acknowledged_is_there(service, ledger)
    _check_last_good_model_serves(service)


def test_sigkill_mid_retrain_leaves_the_last_good_model_and_fails_the_job(world):
    service, ledger, _, _ = world
    with service.client() as client:
        job_id = client.post("/v1/retrain", params={"force": "true"}).json()["job_id"]
        service.wait_for(lambda: client.get(f"/v1/jobs/{job_id}").json()["status"] != "queued", 60, "retrain running")
    service.kill()
    service.start()
    with service.client() as client:
        job = client.get(f"/v1/jobs/{job_id}").json()
    assert job["status"] in ("failed", "done")
    if job["status"] == "failed":
        assert "restarted" in job["error"]
    _check_everything_acknowledged_is_there(service, ledger)
    _check_last_good_model_serves(service)


def test_sigkill_mid_delivery_delivers_every_review_once(world):
    service, ledger, label_studio, title = world
    with service.client() as client:
        for seed in range(100, 116):
            body = client.post("/v1/predict", json={"image": noise_png(seed)}).json()
            for prediction in body["predictions"]:
                if prediction["decision"] == "review":
                    ledger.reviews.add(prediction["item_id"])
        assert ledger.reviews, "the demo model was sure of noise: nothing to deliver"
        service.wait_for(lambda: _pending(client) < len(ledger.reviews), 120, "delivery started")
    service.kill()
    service.start()
    with service.client() as client:
        service.wait_for(lambda: _pending(client) == 0, 180, "every review delivered")
    counts = _one_task_per_item(service, label_studio, title)
    assert ledger.reviews <= set(counts)
    _check_everything_acknowledged_is_there(service, ledger)


def test_label_studio_stopped_and_restarted_while_reviews_are_routed(world):
    service, ledger, label_studio, title = world
    label_studio.launcher.stop()
    try:
        with service.client() as client:
            assert client.get("/readyz").json()["status"] == "degraded"
            for seed in range(200, 208):
                response = client.post("/v1/predict", json={"image": noise_png(seed)})
                assert response.status_code == 200
                ledger.reviews.update(p["item_id"] for p in response.json()["predictions"] if p["decision"] == "review")
            assert _pending(client) > 0
    finally:
        label_studio.launcher.start(wait=True, timeout_s=240)
    with service.client() as client:
        service.wait_for(lambda: _pending(client) == 0, 240, "reviews delivered after Label Studio came back")
        assert client.get("/readyz").json()["status"] == "ready"
    assert ledger.reviews <= set(_one_task_per_item(service, label_studio, title))
    _check_everything_acknowledged_is_there(service, ledger)


def _webhook(annotation_id: int, task_id: int, label: str, at: str) -> dict:
    return {
        "action": "ANNOTATION_UPDATED",
        "annotation": {"id": annotation_id, "task": task_id, "completed_by": 1, "updated_at": at, "was_cancelled": False,
                       "result": [{"from_name": "label", "to_name": "image", "type": "choices", "value": {"choices": [label]}}]},
        "task": {"id": task_id, "data": {}},
    }  # fmt: skip


def test_a_poison_webhook_does_not_block_the_good_ones_and_a_forged_replay_changes_nothing(world):
    """Poison bodies (an id that is not one: a 400 at the door; an annotation Label Studio never issued: marked failed)
    block nothing; annotators' real answers become labels; a replayed body with another label and a later time
    changes nothing (every event is read back from Label Studio), a real update does."""
    service, ledger, label_studio, title = world
    with service.client() as client:
        classes = _classes(client)
    with label_studio.desk() as desk:
        project = desk.ensure_project(classes, title)
        fresh = [task for task in desk.open_tasks(project) if task.item_id not in ledger.labels][:3]
        assert len(fresh) == 3, "the suite's service has delivered review tasks by now"
        hooks = httpx.Client(base_url=service.url, headers={"X-Juicer-Secret": SECRET}, timeout=10)
        with hooks:
            assert hooks.post("/v1/webhooks/label-studio", json={"action": "ANNOTATION_CREATED", "annotation": {"id": "x"}}).status_code == 400
            never_issued = _webhook(2_000_000_000, fresh[0].task_id, classes[1], "2099-01-01T00:00:00Z")
            assert hooks.post("/v1/webhooks/label-studio", json=never_issued).status_code == 200
            annotations = [desk.submit_annotation(task.task_id, classes[offset]) for offset, task in enumerate(fresh)]
            with service.client() as client:
                for offset, task in enumerate(fresh):
                    service.wait_for(lambda: (client.get(f"/v1/items/{task.item_id}").json()["label"] or {}).get("label") == classes[offset],
                                     60, f"label of {task.item_id} from its webhook")  # fmt: skip
                    ledger.labels[task.item_id] = classes[offset]
            forged = _webhook(annotations[0], fresh[0].task_id, classes[5], "2099-01-01T00:00:00Z")  # a later time, another label
            assert hooks.post("/v1/webhooks/label-studio", json=forged).status_code == 200
            desk.update_annotation(annotations[1], classes[6])  # a real change, applied after the forged replay
    with service.client() as client:
        service.wait_for(lambda: client.get(f"/v1/items/{fresh[1].item_id}").json()["label"]["label"] == classes[6], 60, "newer label")
        ledger.labels[fresh[1].item_id] = classes[6]
        assert client.get(f"/v1/items/{fresh[0].item_id}").json()["label"]["label"] == classes[0]  # the replay changed nothing
    _check_everything_acknowledged_is_there(service, ledger)


def test_label_studio_down_at_service_start(world):
    service, ledger, label_studio, title = world
    service.stop()
    label_studio.launcher.stop()
    try:
        service.start()
        with service.client() as client:
            assert client.get("/readyz").json()["status"] == "degraded"
            response = client.post("/v1/predict", json={"image": noise_png(300)})
            assert response.status_code == 200
            ledger.reviews.update(p["item_id"] for p in response.json()["predictions"] if p["decision"] == "review")
    finally:
        label_studio.launcher.start(wait=True, timeout_s=240)
    with service.client() as client:
        service.wait_for(lambda: client.get("/readyz").json()["status"] == "ready", 120, "connected to Label Studio")
        service.wait_for(lambda: _pending(client) == 0, 240, "reviews delivered")
    assert ledger.reviews <= set(_one_task_per_item(service, label_studio, title))
    _check_everything_acknowledged_is_there(service, ledger)
    _check_last_good_model_serves(service)


def test_a_client_trickling_its_request_is_cut_off_at_the_deadline_and_others_are_served(world):
    """One byte a second never trips the 3 s read timeout; the request deadline still ends the request (a 408
    problem body, then the connection closes) while everyone else is answered."""
    import socket

    service = world[0]
    head = (f"POST /v1/predict HTTP/1.1\r\nHost: 127.0.0.1:{service.port}\r\nAuthorization: Bearer {service.token}\r\n"
            "Content-Type: application/json\r\nContent-Length: 100000\r\n\r\n").encode()
    received = b""
    with socket.create_connection(("127.0.0.1", service.port), timeout=30) as slow:
        slow.sendall(head + b'{"images": ["')
        started = time.monotonic()
        closed_after = None
        while time.monotonic() - started < 4 * DEADLINE_S:
            try:
                slow.sendall(b"A")
                slow.settimeout(1.0)
                chunk = slow.recv(4096)
                received += chunk
                if chunk == b"":
                    closed_after = time.monotonic() - started
                    break
            except TimeoutError:
                pass  # nothing from the server yet: trickle on
            except OSError:
                closed_after = time.monotonic() - started
                break
            with service.client() as client:  # meanwhile everyone else is answered
                assert client.get("/healthz").status_code == 200
    status_line = received.split(b"\r\n", 1)[0]
    _record(f"trickling client: connection closed after {closed_after} s (deadline {DEADLINE_S} s), answer {status_line!r}")
    assert closed_after is not None and closed_after < DEADLINE_S + 6, (closed_after, received[:300])
    assert received.startswith(b"HTTP/1.1 408"), received[:300]
