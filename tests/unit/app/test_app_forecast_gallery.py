"""The forecast, the precision rule, the report page and the gallery through the API, with a labelled holdout."""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
from PIL import Image

from app.store import NewLabel
from tests.support.images import add_png_item, png
from tests.unit.app.conftest import CLASSES, COLOURS

PROBLEM = "application/problem+json"


def noisy_png(colour, seed, noise=60, confusable=0.3):
    """A noisy colour; a share ``confusable`` of images wear another class's colour (so accuracy stays below 1)."""
    rng = np.random.default_rng(seed)
    if rng.random() < confusable:
        colour = list(COLOURS.values())[rng.integers(0, len(COLOURS))]
    return png(colour, seed=rng, noise=noise)


def add_holdout(services, per_class=20):
    new_labels = []
    for k, name in enumerate(CLASSES):
        for i in range(per_class):
            item_id = f"holdout-{name}-{i}"
            data = noisy_png(COLOURS[name], seed=1000 + 100 * k + i)
            add_png_item(services.store, services.data_dir, item_id, data, "holdout", source=item_id)
            new_labels.append(NewLabel(item_id, name, "dataset"))
    services.store.add_labels(new_labels)


def label_more(client, per_class, offset):
    entries = [
        {"image": base64.b64encode(noisy_png(COLOURS[name], seed=10 * k + i + 100 * offset)).decode(), "label": name}
        for k, name in enumerate(CLASSES) for i in range(per_class)
    ]
    for start in range(0, len(entries), 4):
        assert client.post("/v1/labels", json={"labels": entries[start:start + 4]}).status_code == 201


@pytest.fixture
def versions(client, services):
    """A labelled holdout of 60 noisy images and five versions trained on 3, 6, 12, 24, 48 labels."""
    add_holdout(services)
    for offset, per_class in enumerate((1, 1, 2, 4, 8)):
        label_more(client, per_class, offset)
        assert services.trainer.retrain(reason="test", refresh_queue=False).version is not None
    return services


def test_forecast_refuses_with_one_version_and_says_why(client, services):
    add_holdout(services)
    label_more(client, 1, 0)
    services.trainer.retrain(reason="test", refresh_queue=False)
    body = client.get("/v1/forecast").json
    assert "at least 4" in body["refused"] and body["curve"] is None


def test_forecast_answers_over_the_versions(client, versions):
    response = client.get("/v1/forecast?target=0.9")
    assert response.status_code == 200
    body = response.json
    assert {"family", "backtest_error", "refused", "targets", "curve", "non_monotone", "limit_n"} <= set(body)
    assert body["backtest_error"] is not None
    assert 0.9 in [t["target"] for t in body["targets"]]
    assert body["limit_n"] == 4 * 48
    if body["refused"] is None:
        assert body["curve"]["n_labels"][-1] == pytest.approx(4 * 48)
        assert all(lo <= mid <= hi for lo, mid, hi in zip(body["curve"]["low"], body["curve"]["expected"], body["curve"]["high"]))


def test_a_bad_target_is_a_problem(client, versions):
    response = client.get("/v1/forecast?target=high")
    assert response.status_code == 400 and response.mimetype == PROBLEM


def test_every_point_carries_its_wilson_interval_and_precision_promise(client, versions):
    points = client.get("/v1/report").json["points"]
    assert len(points) == 5
    for point in points:
        low, high = point["accuracy_interval"]
        assert low <= point["holdout_accuracy"] <= high and point["holdout_n"] == 60
        rule = point["precision_rule"]
        assert rule["target_precision"] == 0.95 and rule["n_holdout"] == 60
        assert rule["threshold"] is None or 0 < rule["threshold"] <= 1


def test_the_precision_rule_serves_the_versions_threshold(client, versions):
    versions.settings.service.decision_rule = "precision"
    response = client.post("/v1/predict", json={"image": base64.b64encode(noisy_png(COLOURS["red"], 5)).decode()})
    [prediction] = response.json["predictions"]
    assert prediction["rule"] == "precision"
    promise = versions.models.current.precision_rule
    if promise["threshold"] is None:  # 60 holdout items cannot back a 95% promise at 90% confidence
        assert prediction["decision"] == "review" and "everything goes to review" in prediction["reason"]


def test_report_page_has_error_bars_forecast_per_class_and_precision_table(client, versions):
    page = client.get("/report").get_data(as_text=True)
    assert 'id="forecast-headline"' in page and 'id="per-class"' in page and 'id="confusion"' in page
    assert 'id="precision-rule"' in page and "v0005" in page and "95% interval" in page
    assert client.get("/report.png").data[:8] == b"\x89PNG\r\n\x1a\n"


def test_gallery_shows_the_fixed_sample_under_the_serving_version(client, versions):
    page = client.get("/gallery").get_data(as_text=True)
    assert page.count("<figure") == 48 and 'id="version-slider"' in page and "v0005:" in page
    first = client.get("/gallery?version=v0001").get_data(as_text=True)
    assert "v0001:" in first and first.count("<figure") == 48


def test_gallery_never_runs_the_backbone(client, versions):
    calls = versions.embeddings.backbone.calls
    assert client.get("/gallery").status_code == 200
    assert client.get("/gallery.gif").status_code == 200
    assert versions.embeddings.backbone.calls == calls


def test_gallery_gif_has_one_frame_per_version(client, versions):
    response = client.get("/gallery.gif")
    assert response.mimetype == "image/gif"
    with Image.open(io.BytesIO(response.data)) as gif:
        assert gif.n_frames == 5


def test_gallery_before_any_model_says_so(client, services):
    page = client.get("/gallery").get_data(as_text=True)
    assert "No model versions yet" in page
    assert client.get("/gallery.gif").status_code == 200
