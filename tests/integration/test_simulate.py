"""The main job end to end: `juicer serve` (the Fashion-MNIST demo) and `juicer simulate`.

Starts the real service as a user does, on free loopback ports in a fresh data folder, connected to the session's
real Label Studio (a project of its own; `juicer serve` starting a Label Studio of its own is the hostile suite's
setup and `benchmarks/simulate.py`'s), plays annotators through it with `juicer simulate`, and checks that each
retrain adds a report point with more labels and that accuracy grows from 1 label per class.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.served import ServedJuicer, data_folder, link_built_backbones, subprocess_env

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def served(free_port, label_studio):
    """`juicer serve` with a small demo on the session's Label Studio, until /readyz answers 200; stopped afterwards."""
    # Label Studio serves local files only under its document root: the data folder lives there.
    data_dir = data_folder(label_studio.files_root.parent / f"simulate-{label_studio.project_title('d').split()[-1]}")
    link_built_backbones(data_dir)
    port = free_port()
    env = subprocess_env(
        data_dir,
        JUICER_SERVICE__PORT=str(port),
        JUICER_SERVICE__RETRAIN_AFTER_LABELS="100000",  # only the simulation's retrains, at known label counts
        JUICER_SERVICE__REVIEW_BATCH_SIZE="20",
        JUICER_SERVICE__SECOND_LOOK_SHARE="0",  # every label a new item: versions at known label counts (second looks: test_second_look)
        JUICER_LABEL_STUDIO__URL=label_studio.url,
        JUICER_LABEL_STUDIO__TOKEN=label_studio.token,
        JUICER_LABEL_STUDIO__PROJECT_TITLE=label_studio.project_title("simulate"),
    )
    with ServedJuicer(data_dir, port, env, ["--demo-pool", "80", "--holdout", "100"]) as service:
        yield service


def test_simulate_uncertainty_order_improves_the_model(served):
    result = subprocess.run(
        [sys.executable, "-m", "app.cli", "simulate", "--labels", "20", "--order", "uncertainty",
         "--retrain-every", "10", "--service", served.url, "--wait", "180"],
        cwd=REPO, env=served.env, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout[: result.stdout.index("{")].splitlines()
    version_lines = [line for line in lines if line.startswith("model v")]
    assert version_lines[0].startswith("model v0001: 10 labels (1.0/class)")
    report = json.loads(result.stdout[result.stdout.index("{") :])
    points = report["points"]
    assert [p["n_labels"] for p in points] == [10, 20, 30]
    assert len(version_lines) == len(points)
    assert all(sum(p["labels_per_class"].values()) == p["n_labels"] for p in points)
    assert points[-1]["holdout_accuracy"] > points[0]["holdout_accuracy"]


def test_simulate_random_order_takes_open_tasks(served):
    with served.client(timeout_s=10) as client:
        before = client.get("/v1/report").json()["points"]
    result = subprocess.run(
        [sys.executable, "-m", "app.cli", "simulate", "--labels", "10", "--order", "random",
         "--retrain-every", "10", "--service", served.url, "--wait", "180", "--seed", "7"],
        cwd=REPO, env=served.env, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    after = json.loads(result.stdout[result.stdout.index("{") :])["points"]
    assert len(after) == len(before) + 1
    assert after[-1]["n_labels"] == before[-1]["n_labels"] + 10


def test_label_studio_hands_a_user_their_locked_task_first_so_the_wait_reads_the_projects_version(label_studio):
    """What the simulator's wait for a re-scored queue works around (Label Studio 1.23.2): a /next locks the task it
    hands out, and that user gets the locked task first whatever the new version's order; a locked task with no
    prediction of the project's version comes back with none. The project's model version moves with the re-score
    and reading it locks nothing."""
    from annotation.models import ReviewRequest

    images = label_studio.images
    with label_studio.desk() as desk:
        project = desk.ensure_project(["cat", "cup", "person"], label_studio.project_title("locks"))
        first = [ReviewRequest("a", images["coffee"], "cup", 0.2, "v0001"), ReviewRequest("b", images["chelsea"], "cat", 0.7, "v0001"),
                 ReviewRequest("c", images["astronaut"], "person", 0.5, "v0001")]  # fmt: skip
        desk.send_for_review(project, first)
        assert desk.queue_version(project) == "v0001"
        polled = desk.next_task(project)  # a poll made before the re-score landed: "a", now locked to this user
        desk.send_for_review(project, [ReviewRequest("b", images["chelsea"], "cat", 0.1, "v0002"),
                                       ReviewRequest("c", images["astronaut"], "person", 0.3, "v0002")])  # fmt: skip
        assert desk.queue_version(project) == "v0002"
        again = desk.next_task(project)
        desk.submit_annotation(again.task_id, "cup")  # answering it releases the lock
        after = desk.next_task(project)
    assert polled.item_id == "a" and again.task_id == polled.task_id  # the locked task, though v0002 ranks "b" first
    assert again.model_version is None  # no v0002 prediction: a wait on /next for v0002 would run to its deadline
    assert (after.item_id, after.model_version) == ("b", "v0002")
