"""``python -m simulate.compare``: two offline runs paired by seed, and the pool-sample flags of ``--offline``."""

from __future__ import annotations

import argparse
import json

import pytest

from config import load_settings
from simulate.command import pool_samples, sample_problem
from simulate.compare import compare, main, mean_interval


def document(per_seed: dict[str, list[list[float]]], seeds=(0, 1, 2), **settings) -> dict:
    return {
        "strategies": {name: {"n_labels": [10, 20, 30], "accuracy_per_seed": rows} for name, rows in per_seed.items()},
        "settings": {"seed_list": list(seeds), "start_per_class": 1, "batch": 10, "holdout_fraction": 0.1,
                     "n_images": 100, "dataset": "fashion-mnist", "per_class_limit": 10, **settings},
    }


def test_mean_interval_is_students_t():
    interval = mean_interval([0.70, 0.72, 0.74])
    assert interval.mean == pytest.approx(0.72)
    assert interval.half_width == pytest.approx(4.303 * 0.02 / 3**0.5, rel=1e-3)  # t(0.975, 2) = 4.303
    assert mean_interval([0.5]).half_width == 0.0


def test_the_difference_is_paired_by_seed():
    before = document({"auto": [[0.5, 0.6, 0.7], [0.6, 0.7, 0.8], [0.7, 0.8, 0.9]]})
    after = document({"auto": [[0.5, 0.61, 0.7], [0.6, 0.71, 0.79], [0.7, 0.81, 0.9]], "typical": [[0.1] * 3] * 3})
    rows = compare(before, after, [20, 30, 40])
    assert [(row["strategy"], row["n_labels"]) for row in rows] == [("auto", 20), ("auto", 30)]  # shared only
    at_20 = rows[0]
    assert at_20["difference"].mean == pytest.approx(0.01)
    assert at_20["difference"].half_width == pytest.approx(0.0, abs=1e-12)  # the same +1 point on every seed
    assert at_20["before"].half_width > 0.1  # the seeds' spread is not the change's
    assert (at_20["up"], at_20["same"], at_20["down"]) == (3, 0, 0)
    assert (rows[1]["up"], rows[1]["same"], rows[1]["down"]) == (0, 2, 1)


def test_runs_on_other_seeds_are_not_paired(tmp_path, capsys):
    before, after = tmp_path / "a.json", tmp_path / "b.json"
    before.write_text(json.dumps(document({"auto": [[0.5] * 3] * 3})))
    after.write_text(json.dumps(document({"auto": [[0.5] * 3] * 3}, seeds=(3, 4, 5))))
    assert main([str(before), str(after)]) == 2
    assert "differ in seed_list" in capsys.readouterr().err
    after.write_text(json.dumps(document({"auto": [[0.5] * 3] * 3})))
    assert main([str(before), str(after), "--at", "20"]) == 0
    assert "| auto | 20 | 50.0 +- 0.0 | 50.0 +- 0.0 | +0.0 +- 0.0 | 0 / 3 / 0 |" in capsys.readouterr().out


def test_offline_pool_samples_come_from_the_settings_unless_a_flag_says(tmp_path):
    settings = load_settings(environ={"JUICER_LEARNER__POOL_SAMPLE__CLUSTER": "700"})
    flags = argparse.Namespace(margin_sample=None, cluster_sample=None, semi_head_sample=300)
    assert pool_samples(flags, settings) == {"margin": 100_000, "cluster": 700, "semi_head": 300}
    assert sample_problem(flags) is None
    flags.margin_sample = 0
    assert sample_problem(flags) == "--margin-sample must be a positive number of pool rows, got 0"


def test_the_offline_command_refuses_a_sample_below_one(capsys):
    from app.cli.main import main as juicer

    assert juicer(["simulate", "--offline", "--cluster-sample", "-3"]) == 2
    assert "--cluster-sample must be a positive number of pool rows, got -3" in capsys.readouterr().err
