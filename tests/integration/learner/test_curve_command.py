"""``juicer curve`` end to end: real Fashion-MNIST images, the real EfficientNet-Lite0 backbone, real files."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from app.cli.main import main as juicer
from config import load_settings
from learner.backbones import backbone_dir, ensure_backbone
from learner.datasets import load_fashion_mnist

pytestmark = pytest.mark.integration

BUDGETS = ["1/class", "3/class", "5%"] + [f"{p}%" for p in range(10, 101, 10)]


@pytest.fixture
def data_dir(tmp_path, monkeypatch) -> Path:
    """A fresh data folder (cold embedding cache) with the converted backbone linked in from the real one."""
    settings = load_settings()
    built, _ = ensure_backbone("efficientnet-lite0", settings.data_dir)
    data = tmp_path / "data"
    link = backbone_dir("efficientnet-lite0", data)
    link.parent.mkdir(parents=True)
    link.symlink_to(built.resolve(), target_is_directory=True)
    monkeypatch.setenv("JUICER_DATA_DIR", str(data))
    return data


def test_curve_on_fashion_mnist_writes_the_three_files(data_dir, tmp_path, capsys):
    out = tmp_path / "out"
    rc = juicer(["curve", "--dataset", "fashion-mnist", "--per-class-limit", "20", "--seeds", "1",
                 "--backbone", "efficientnet-lite0", "--out", str(out), "--no-progress"])
    assert rc == 0
    document = json.loads((out / "curve.json").read_text())
    assert document["dataset"] == "fashion-mnist"
    assert document["backbone"] == "efficientnet-lite0"
    assert document["n_images"] == 200
    assert [b["budget"] for b in document["budgets"]] == BUDGETS
    by_name = {b["budget"]: b for b in document["budgets"]}
    assert by_name["1/class"]["n_labels"] == 10
    assert by_name["3/class"]["n_labels"] == 30
    assert by_name["100%"]["n_labels"] == 180  # 20 per class, 2 held out
    for b in document["budgets"]:
        assert 0.0 <= b["accuracy_min"] <= b["accuracy_mean"] <= b["accuracy_max"] <= 1.0
    # 18 labels per class of Fashion-MNIST on ImageNet features: far better than chance (10%)
    assert by_name["100%"]["accuracy_mean"] >= 0.5
    assert {"embed_s", "train_s", "total_s"} <= set(document["timing"])
    assert document["timing"]["embed_s"] > 0 and document["timing"]["total_s"] >= document["timing"]["train_s"]

    rows = list(csv.DictReader((out / "curve.csv").open()))
    assert [r["budget"] for r in rows] == BUDGETS
    assert float(rows[-1]["accuracy_mean"]) == pytest.approx(by_name["100%"]["accuracy_mean"], abs=1e-6)
    assert (out / "curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    printed = capsys.readouterr().out
    assert "1/class" in printed and "curve.json" in printed
    forecast = document["forecast"]
    assert forecast["fitted_on"] == ["1/class", "3/class", "5%", "10%"]
    assert set(forecast["budgets"]) == {"20%", "50%", "100%"}
    assert forecast["budgets"]["100%"]["measured"] == pytest.approx(by_name["100%"]["accuracy_mean"])
    # 18 per class: 5% and 10% round to 1 and 2 per class, so only 3 distinct label counts: refused, and said so
    assert "at least 4" in forecast["refused"] and "refused" in printed


def test_curve_on_a_folder_with_augmentation(data_dir, tmp_path):
    """A folder-per-class dataset (PNG files written from real Fashion-MNIST images), two augmented copies each."""
    source = load_fashion_mnist(load_settings().fashion_mnist_dir, per_class_limit=6, seed=1)
    root = tmp_path / "photos"
    for i, (image, label) in enumerate(zip(source.sources, source.labels)):
        if label >= 3:
            continue
        folder = root / source.class_names[label].replace("/", "-")
        folder.mkdir(parents=True, exist_ok=True)
        pixels = (image.pixels((28, 28)) * 255).round().astype(np.uint8)
        Image.fromarray(pixels).save(folder / f"{i:03d}.png")
    out = tmp_path / "out"
    rc = juicer(["curve", "--dataset", str(root), "--seeds", "2", "--augment", "2", "--out", str(out),
                 "--no-progress"])
    assert rc == 0
    document = json.loads((out / "curve.json").read_text())
    assert document["n_images"] == 18
    assert document["augment"] == 2
    assert document["seeds"] == [0, 1]
    assert len(document["budgets"][0]["accuracies"]) == 2
    assert (out / "curve.png").stat().st_size > 0


def test_curve_reports_a_missing_folder_without_a_traceback(data_dir, tmp_path, capsys):
    rc = juicer(["curve", "--dataset", str(tmp_path / "nowhere"), "--out", str(tmp_path / "out"), "--no-progress"])
    assert rc == 1
    assert "nowhere" in capsys.readouterr().err


@pytest.mark.parametrize(
    "extra, message",
    [(["--seeds", "0"], "--seeds"), (["--per-class-limit", "1"], "--per-class-limit"),
     (["--augment", "-1"], "--augment"), (["--holdout", "1.5"], "--holdout")],
)
def test_curve_refuses_bad_arguments_before_any_work(extra, message, tmp_path, capsys):
    rc = juicer(["curve", "--out", str(tmp_path / "out"), *extra])
    assert rc == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
