"""The simulated annotator (:mod:`simulate.annotator`) against a real Label Studio server (the session's
``label_studio`` fixture): the moves `juicer simulate` makes that the production desk does not have."""

from __future__ import annotations

import pytest

from annotation.models import ReviewRequest

pytestmark = pytest.mark.integration

CLASSES = ["cat", "cup", "person"]


def test_open_tasks_lists_what_nobody_answered_or_skipped(label_studio):
    scores = {"chelsea": 0.91, "coffee": 0.22, "astronaut": 0.57}
    labels = {"chelsea": "cat", "coffee": "cup", "astronaut": "person"}
    requests = [ReviewRequest(f"item-{name}", label_studio.images[name], labels[name], scores[name], "v1") for name in scores]
    with label_studio.desk() as desk:
        project = desk.ensure_project(CLASSES, label_studio.project_title("open tasks"))
        tasks = {t.item_id: t.task_id for t in desk.send_for_review(project, requests)}
        before = desk.open_tasks(project)
        desk.submit_annotation(tasks["item-coffee"], "cup")
        desk.submit_annotation(tasks["item-chelsea"], None)  # skipped
        desk.send_for_review(project, [ReviewRequest("item-astronaut", label_studio.images["astronaut"], "cat", 0.33, "v2")])
        after = desk.open_tasks(project)
    assert sorted(t.item_id for t in before) == ["item-astronaut", "item-chelsea", "item-coffee"]
    assert all(t.model_version == "v1" and t.prediction_id is not None for t in before)
    [left] = after
    assert (left.item_id, left.task_id) == ("item-astronaut", tasks["item-astronaut"])
    assert (left.predicted_label, left.model_version) == ("cat", "v2")
    assert left.score == pytest.approx(0.33)
    assert left.image.startswith("/data/local-files/")
