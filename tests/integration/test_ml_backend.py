"""juicer as the ML backend of a Label Studio project it did not create: the real server, backbone and images.

The project is made through the SDK (not juicer's desk) with its own Image + Choices names; 200 Fashion-MNIST
PNGs are uploaded to Label Studio as files; juicer is connected through ``POST /api/ml`` (Label Studio itself
calls /health and /setup); the Data Manager's "Retrieve predictions" action fills every task with a prediction;
20 tasks are annotated through the API; "Start training" (``POST /api/ml/{id}/train``) yields a new version.
"""

from __future__ import annotations

import threading
import time

import httpx
import pytest

from tests.support.wait import poll
pytestmark = pytest.mark.integration

TOKEN = "ml-backend-token-123"
N_TASKS = 200
N_ANNOTATED = 20
CONFIG_TEMPLATE = (
    '<View><Image name="photo" value="$img"/>'
    '<Choices name="garment" toName="photo" choice="single">{choices}</Choices></View>'
)




@pytest.fixture(scope="module")
def dataset():
    from learner.datasets import load_fashion_mnist

    return load_fashion_mnist("/usr/share/datasets/fashion-mnist", per_class_limit=40, seed=11)


@pytest.fixture(scope="module")
def juicer(label_studio, dataset, free_port, tmp_path_factory, backbone):
    """A running juicer with a first model (2 labels per class) and its scheduler, on a free loopback port."""
    from werkzeug.serving import make_server

    from app import create_app
    from app.core.demo import seed_demo
    from app.worker.scheduler import Scheduler
    from app.services import build_services
    from app.store import Store
    from config import load_settings

    data_dir = tmp_path_factory.mktemp("juicer-ml")
    port = free_port()
    settings = load_settings(
        environ={}, data_dir=data_dir,
        service={"api_token": TOKEN, "port": port, "retrain_after_labels": 1000, "pull_interval_s": 3600},
        label_studio={"url": label_studio.url, "token": label_studio.token},
    )  # fmt: skip
    store = Store.open(data_dir)
    store.set_meta("classes", list(dataset.class_names))
    seed_demo(store, data_dir, dataset, n_pool=0, n_holdout=50, seed=2)
    services = build_services(settings, store=store, backbone=backbone)
    assert services.trainer.retrain(reason="first model").version == "v0001"
    app = create_app(services=services)
    http = make_server("127.0.0.1", port, app, threaded=True)
    threading.Thread(target=http.serve_forever, daemon=True).start()
    jobs = Scheduler(services)
    jobs.start()
    try:
        yield services, f"http://127.0.0.1:{port}"
    finally:
        jobs.shutdown(wait=False)
        http.shutdown()
        store.close()


def test_label_studio_uses_juicer_as_its_ml_backend(label_studio, juicer, dataset):
    from label_studio_sdk import LabelStudio

    from app.core.demo import encode_png

    services, juicer_url = juicer
    ls = LabelStudio(base_url=label_studio.url, api_key=label_studio.token)
    choices = "".join(f'<Choice value="{name}"/>' for name in dataset.class_names)
    project = ls.projects.create(title=label_studio.project_title("ml backend"), label_config=CONFIG_TEMPLATE.format(choices=choices))
    truth: dict[str, str] = {}
    files = []
    fresh = [row for row, item_id in enumerate(dataset.item_ids) if services.store.get_item(item_id) is None]
    for row in fresh[:N_TASKS]:  # images juicer has not seen (not its seeds or holdout)
        name = f"fm{row:04d}.png"
        truth[name] = dataset.class_names[int(dataset.labels[row])]
        files.append((name, (name, encode_png(dataset.sources[row].array), "image/png")))
    headers = {"Authorization": f"Token {label_studio.token}"}
    with httpx.Client(base_url=label_studio.url, headers=headers, timeout=120) as http:
        for start in range(0, N_TASKS, 50):  # at most 100 files per request; one field name each
            imported = http.post(f"/api/projects/{project.id}/import", files=files[start : start + 50])
            assert imported.status_code == 201, imported.text
        tasks = list(ls.tasks.list(project=project.id, page_size=1000))
        assert len(tasks) == N_TASKS and all(str(t.data["img"]).startswith("/data/upload/") for t in tasks)

        # Connect: Label Studio checks /health and /setup itself (401 without the token as Basic password).
        basic = {"basic_auth_user": "label-studio", "basic_auth_pass": TOKEN, "auth_method": "BASIC_AUTH"}
        refused = http.post("/api/ml", json={"url": f"{juicer_url}/label-studio-ml", "project": project.id, "title": "juicer"})
        assert refused.status_code == 400 and "authentication" in refused.text
        connected = http.post("/api/ml", json={"url": f"{juicer_url}/label-studio-ml", "project": project.id, "title": "juicer", **basic})
        assert connected.status_code == 201, connected.text
        backend = connected.json()
        assert str(project.id) in services.ml_backend_tokens  # /setup was called, with the access token

        started = time.perf_counter()
        action = http.post(
            "/api/dm/actions", params={"id": "retrieve_tasks_predictions", "project": project.id},
            json={"selectedItems": {"all": True, "excluded": []}}, timeout=200,
        )  # fmt: skip
        retrieve_s = time.perf_counter() - started
        assert action.status_code == 200, action.text
        predictions = http.get("/api/predictions/", params={"project": project.id}).json()
        by_task: dict[int, list] = {}
        for prediction in predictions:
            by_task.setdefault(int(prediction["task"]), []).append(prediction)
        assert len(by_task) == N_TASKS and all(len(p) == 1 for p in by_task.values())
        assert all(p[0]["model_version"] == "v0001" and 0 < p[0]["score"] <= 1 for p in by_task.values())
        print(f"\nRetrieve predictions, {N_TASKS} tasks: {retrieve_s:.1f} s ({N_TASKS / retrieve_s:.0f} images/s)")

        # Annotate 20 tasks with the truth; Label Studio's webhook to juicer's /webhook brings each one.
        for task in tasks[:N_ANNOTATED]:
            name = str(task.data["img"]).rsplit("/", 1)[-1].split("-", 1)[-1]
            result = [{"from_name": "garment", "to_name": "photo", "type": "choices", "value": {"choices": [truth[name]]}}]
            ls.annotations.create(id=task.id, result=result)
        poll(lambda: services.store.label_counts_by_source().get("label-studio", 0) >= N_ANNOTATED or
             (services.wake("process-webhooks") and False), 30, "the annotations to become labels")  # fmt: skip

        trained = http.post(f"/api/ml/{backend['id']}/train", json={})
        assert trained.status_code == 200, trained.text
        bearer = {"Authorization": f"Bearer {TOKEN}"}
        models = poll(
            lambda: [m for m in httpx.get(f"{juicer_url}/v1/models", headers=bearer).json()["models"] if m["model_version"] == "v0002"],
            120, "the retrain Label Studio asked for",
        )  # fmt: skip
        assert models[0]["n_labels"] == 10 + N_ANNOTATED  # 1 seed per class + the 20 annotations
        auth = ("label-studio", TOKEN)
        setup = httpx.post(f"{juicer_url}/label-studio-ml/setup", auth=auth, json={"project": f"{project.id}.1", "schema": project.label_config})
        assert setup.json() == {"model_version": "v0002"}
        versions = http.get(f"/api/ml/{backend['id']}/versions").json()
        assert versions["versions"] == ["v0001", "v0002"]
