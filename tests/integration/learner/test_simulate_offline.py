"""``juicer simulate --offline`` end to end: real Fashion-MNIST images, the real backbone, the shared cache."""

from __future__ import annotations

import json

import pytest

from app.cli.main import main as juicer

pytestmark = pytest.mark.integration


def test_offline_simulation_compares_strategies_from_the_same_start(tmp_path, capsys):
    out = tmp_path / "out"
    # The default data folder: its embedding cache is shared, so after the first run nothing is embedded.
    rc = juicer(["simulate", "--offline", "--dataset", "fashion-mnist", "--per-class-limit", "30", "--seeds", "2",
                 "--start-per-class", "1", "--labels", "30", "--batch", "10",
                 "--strategies", "auto,least_confidence,coverage", "--out", str(out), "--no-progress"])
    assert rc == 0
    document = json.loads((out / "simulate.json").read_text())
    assert set(document["strategies"]) == {"auto", "least_confidence", "coverage", "random"}  # random always runs
    assert document["seeds"] == 2 and 0.5 < document["full_data_accuracy"] <= 1.0
    first_round = {name: entry["accuracy_mean"][0] for name, entry in document["strategies"].items()}
    assert len(set(first_round.values())) == 1  # the same start labels for every strategy
    for entry in document["strategies"].values():
        assert entry["n_labels"] == [10, 20, 30]
        assert all(0.1 < a <= 1.0 for a in entry["accuracy_mean"])
        assert all(lo <= hi for lo, hi in zip(entry["accuracy_p10"], entry["accuracy_p90"]))
        assert set(entry["labels_to_reach"]) == {"0.85", "0.98_of_full"}
    assert (out / "simulate.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "to 85%" in capsys.readouterr().out


def test_offline_simulation_from_no_labels(tmp_path):
    out = tmp_path / "out"
    rc = juicer(["simulate", "--offline", "--per-class-limit", "30", "--seeds", "1", "--start-per-class", "0",
                 "--labels", "10", "--batch", "10", "--strategies", "typical", "--out", str(out), "--no-progress"])
    assert rc == 0
    document = json.loads((out / "simulate.json").read_text())
    assert document["strategies"]["typical"]["n_labels"] == [10]
    assert document["strategies"]["random"]["n_labels"] == [10]


def test_offline_simulation_takes_the_pool_samples_and_records_each_seed(tmp_path):
    out, flags = tmp_path / "out", ["--margin-sample", "50", "--cluster-sample", "40", "--semi-head-sample", "60"]
    rc = juicer(["simulate", "--offline", "--per-class-limit", "30", "--seeds", "2", "--labels", "30", "--batch", "10",
                 "--strategies", "auto,coverage", *flags, "--out", str(out), "--no-progress"])
    assert rc == 0
    document = json.loads((out / "simulate.json").read_text())
    assert document["settings"]["pool_sample"] == {"margin": 50, "cluster": 40, "semi_head": 60}
    for entry in document["strategies"].values():
        per_seed = entry["accuracy_per_seed"]
        assert len(per_seed) == 2 and all(len(row) == len(entry["n_labels"]) for row in per_seed)
        assert [sum(column) / 2 for column in zip(*per_seed)] == pytest.approx(entry["accuracy_mean"])


def test_offline_simulation_refuses_an_unknown_strategy(capsys):
    assert juicer(["simulate", "--offline", "--strategies", "clairvoyant"]) == 2
    assert "unknown strategies clairvoyant" in capsys.readouterr().err


def test_offline_simulation_with_noisy_annotators_and_checks(tmp_path, capsys):
    out = tmp_path / "out"
    rc = juicer(["simulate", "--offline", "--per-class-limit", "30", "--seeds", "1", "--labels", "60", "--batch", "10",
                 "--strategies", "least_confidence", "--head", "supervised", "--noise", "0.2", "--accept-guess", "0.5",
                 "--checks", "--out", str(out), "--no-progress"])
    assert rc == 0
    document = json.loads((out / "simulate.json").read_text())
    assert document["settings"]["annotators"] == {**document["settings"]["annotators"], "noise": 0.2,
                                                  "accept_guess": 0.5, "checks": True}
    for entry in document["strategies"].values():
        assert entry["n_labels"][-1] == 60  # labels spent: second looks come out of the same budget
        last = entry["rounds"][0][-1]
        assert last["n_labels"] == 60 and last["n_items"] <= 60
        assert 0 <= last["train_wrong"] <= last["n_items"] and "suspect_recall" in last
    assert "with label checks" in capsys.readouterr().out


def test_offline_simulation_refuses_a_noise_rate_above_one(capsys):
    assert juicer(["simulate", "--offline", "--noise", "1.5"]) == 2
    assert "--noise must be a probability" in capsys.readouterr().err
    assert juicer(["simulate", "--checks"]) == 2
    assert "--checks is for --offline" in capsys.readouterr().err
