"""The holdout labelled blind in a Label Studio project juicer did not create, connected through the ML backend.

The real Label Studio, backbone and Fashion-MNIST images. The test (not juicer) creates a project with its own
Image and Choices names and connects juicer as its ML backend (``POST /api/ml``: Label Studio calls ``/setup``).
juicer, with a pool and no labelled holdout, reserves a holdout; its delivery job creates the holdout tasks in that
project, under the project's own image key and with no prediction; Label Studio's "Retrieve predictions" gets no
guess for them either; an annotation on one comes back through the ML backend's webhook and lands in the holdout.
"""

from __future__ import annotations

import httpx
import pytest

from tests.support.in_process import in_process_juicer
from tests.support.wait import poll

pytestmark = pytest.mark.integration

TOKEN = "holdout-elsewhere-token"
CONFIG_TEMPLATE = (
    '<View><Image name="photo" value="$img"/>'
    '<Choices name="garment" toName="photo" choice="single">{choices}</Choices></View>'
)


@pytest.fixture(scope="module")
def juicer(label_studio, backbone, tmp_path_factory):
    """A juicer with a first model, a pool and no labelled holdout, its own project, on a free loopback port."""
    from learner.datasets import load_fashion_mnist

    dataset = load_fashion_mnist("/usr/share/datasets/fashion-mnist", per_class_limit=8, seed=21)
    with in_process_juicer(
        label_studio, backbone, dataset, title="juicer own",
        service={"api_token": TOKEN, "retrain_after_labels": 1000, "review_batch_size": 5,
                 "holdout": {"min_labels": 4, "share": 0.1, "max_pool_share": 0.2}},
        seed={"n_pool": 60, "n_holdout": 0, "seed": 6},  # no labelled holdout: juicer reserves one
        store_url=f"sqlite:///{tmp_path_factory.mktemp('holdout-elsewhere-store')}/juicer.db",
    ) as running:  # fmt: skip
        yield running.services, running.url, dataset


def test_holdout_tasks_are_created_blind_in_a_project_juicer_did_not_create_and_their_answer_lands_in_the_holdout(
    label_studio, juicer
):
    from label_studio_sdk import LabelStudio

    from app.store import HOLDOUT_VERSION
    from app.worker.scheduler import deliver_outbox, process_webhook_events

    services, juicer_url, dataset = juicer
    ls = LabelStudio(base_url=label_studio.url, api_key=label_studio.token)
    choices = "".join(f'<Choice value="{name}"/>' for name in dataset.class_names)
    project = ls.projects.create(title=label_studio.project_title("not juicer's"), label_config=CONFIG_TEMPLATE.format(choices=choices))
    headers = {"Authorization": f"Token {label_studio.token}"}
    with httpx.Client(base_url=label_studio.url, headers=headers, timeout=120) as http:
        basic = {"basic_auth_user": "label-studio", "basic_auth_pass": TOKEN, "auth_method": "BASIC_AUTH"}
        connected = http.post("/api/ml", json={"url": f"{juicer_url}/label-studio-ml", "project": project.id, "title": "juicer", **basic})
        assert connected.status_code == 201, connected.text

        first = services.trainer.retrain(reason="first model", force=True)  # reserves the holdout, queues its first items
        assert first.version is not None
        blind = {row.item_id for row in services.store.due_reviews(100) if row.model_version == HOLDOUT_VERSION}
        assert len(blind) == 4  # min_labels first
        deliver_outbox(services)

        tasks = list(ls.tasks.list(project=project.id, page_size=100))
        created = {str(task.data["item_id"]): task for task in tasks}
        assert set(created) == blind  # the holdout, and only it, went to the connected project
        assert all(str(task.data["img"]).startswith("/data/local-files/") for task in tasks)  # the project's own key
        own = {task.item_id: task for task in services.desk.open_tasks(services.project)}
        assert not blind & set(own)  # not in juicer's own project
        health = httpx.get(f"{juicer_url}/label-studio-ml/health", auth=("label-studio", TOKEN)).json()
        assert health["holdout"] == f"holdout: 4 tasks created blind in project {project.id}"

        # Label Studio's "Retrieve predictions" asks juicer about every task: no guess for a holdout task.
        action = http.post(
            "/api/dm/actions", params={"id": "retrieve_tasks_predictions", "project": project.id},
            json={"selectedItems": {"all": True, "excluded": []}}, timeout=200,
        )  # fmt: skip
        assert action.status_code == 200, action.text
        assert http.get("/api/predictions/", params={"project": project.id}).json() == []
        image = http.get(str(tasks[0].data["img"]))
        assert image.status_code == 200 and image.content[:4] == b"\x89PNG"  # Label Studio shows juicer's image

        # An annotator answers one; the ML backend's webhook brings it, and it lands in the holdout, never training.
        task = tasks[0]
        item_id = str(task.data["item_id"])
        truth = dict(zip(dataset.item_ids, dataset.label_names))[item_id]
        n_training = len(services.store.current_labels())
        result = [{"from_name": "garment", "to_name": "photo", "type": "choices", "value": {"choices": [truth]}}]
        ls.annotations.create(id=task.id, result=result)
        labelled = poll(
            lambda: (process_webhook_events(services), services.store.current_labels(holdout=True))[1], 30,
            "the annotation to land in the holdout",
        )  # fmt: skip
        assert [(row.item_id, row.label) for row in labelled] == [(item_id, truth)]
        assert len(services.store.current_labels()) == n_training
