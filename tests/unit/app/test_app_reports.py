"""Reports from report points: a PNG of the right size, an escaped self-contained page, a text table."""

import base64
import re
import struct

import pytest

from app.http.reports import ReportPoint, report_html, report_png, report_table

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def point(version, n_labels, accuracy, n_classes=10, **overrides):
    data = {
        "model_version": version,
        "n_labels": n_labels,
        "labels_per_class": {f"class{i}": n_labels // n_classes for i in range(n_classes)},
        "holdout_accuracy": accuracy,
        "coverage": {"0.5": 0.9, "0.8": 0.5},
        "selective_accuracy": {"0.5": None if accuracy is None else accuracy + 0.02, "0.8": 0.95},
        "created": "2026-11-28T21:40:00+00:00",
    }
    data.update(overrides)
    return data


def png_size(data):
    assert data[:8] == PNG_MAGIC
    width, height = struct.unpack(">II", data[16:24])  # the IHDR chunk comes first
    return width, height


@pytest.mark.parametrize("points", [[], [point("v1", 10, 0.58)], [point("v1", 10, 0.58), point("v2", 300, 0.85)]])
def test_png_is_800_by_500(points):
    assert png_size(report_png(points)) == (800, 500)


def test_png_without_study_overlay_and_without_per_class_counts():
    points = [point("v1", 10, 0.5, labels_per_class={}), point("v2", 20, None)]
    assert png_size(report_png(points, study_overlay=False)) == (800, 500)
    assert png_size(report_png(points, study_overlay=True)) == (800, 500)


def test_the_plot_changes_with_the_points():
    assert report_png([point("v1", 10, 0.5)]) != report_png([point("v1", 10, 0.9)])


def test_html_embeds_the_plot_and_lists_every_version():
    page = report_html([point("v1", 10, 0.58), point("v2", 40, 0.734)])
    assert page.startswith("<!doctype html>")
    encoded = re.search(r'src="data:image/png;base64,([^"]+)"', page).group(1)
    assert png_size(base64.b64decode(encoded)) == (800, 500)
    assert "<script" not in page.lower()
    assert "v1" in page and "v2" in page and "73.4%" in page


def test_html_escapes_what_came_from_the_store():
    evil = '<script>alert("x")</script>'
    page = report_html([point(evil, 10, 0.6, labels_per_class={'"><img src=x onerror=1>': 10})], title="a & b")
    assert evil not in page and "&lt;script&gt;" in page
    assert "<img src=x" not in page
    assert "<title>a &amp; b</title>" in page


def test_html_for_no_versions_is_a_helpful_page():
    page = report_html([])
    assert "No model versions yet" in page and "/v1/retrain" in page
    assert "data:image/png;base64," in page


def test_table_has_a_row_per_version_and_every_threshold():
    text = report_table([point("v1", 10, 0.58), point("v2", 300, 0.851, coverage={"0.5": 0.9, "0.8": 0.5, "0.9": 0.3})])
    lines = text.splitlines()
    assert len(lines) == 4
    assert "coverage@0.9" in lines[0] and lines[0].index("coverage@0.5") < lines[0].index("coverage@0.9")
    assert lines[3].startswith("v2") and "85.1%" in lines[3] and "30" in lines[3]
    assert "-" in lines[2].split("58.0%")[1]  # v1 has no 0.9 figures


def test_table_for_no_versions_says_what_to_do():
    assert "retrain" in report_table([])


def test_point_missing_a_member_names_it():
    with pytest.raises(ValueError, match="n_labels"):
        ReportPoint.from_json({"model_version": "v1"})


def test_nan_accuracy_is_treated_as_unknown():
    assert ReportPoint.from_json(point("v1", 10, float("nan"))).holdout_accuracy is None
