"""The data-size curve on embeddings: splits, budgets, seeds, the result documents and the plot."""

from __future__ import annotations

import csv
import io
import json

import numpy as np
import pytest

from learner.curve import DEFAULT_BUDGETS, Budget, budget_picks, holdout_split, run_curve
from learner.head import SoftmaxHead
from learner.plots import plot_curve
from learner.study import study_labels_per_class

# 3 classes of unequal size: 40, 30 and 20 items.
LABELS = np.repeat([0, 1, 2], [40, 30, 20])


def test_budget_names_are_the_issues():
    assert [b.name for b in DEFAULT_BUDGETS] == ["1/class", "3/class", "5%"] + [f"{p}%" for p in range(10, 101, 10)]


def test_holdout_is_ten_percent_of_every_class_and_disjoint():
    pool, holdout = holdout_split(LABELS, 0.1, seed=0)
    assert set(pool).isdisjoint(holdout)
    assert sorted(np.concatenate([pool, holdout]).tolist()) == list(range(len(LABELS)))
    assert np.bincount(LABELS[holdout]).tolist() == [4, 3, 2]


def test_holdout_depends_on_the_seed_only():
    assert np.array_equal(holdout_split(LABELS, 0.1, 5)[1], holdout_split(LABELS, 0.1, 5)[1])
    assert not np.array_equal(holdout_split(LABELS, 0.1, 5)[1], holdout_split(LABELS, 0.1, 6)[1])


def test_tiny_classes_keep_one_on_each_side_and_singletons_are_refused():
    pool, holdout = holdout_split(np.array([0, 0, 1, 1, 1]), 0.1, 0)
    assert np.bincount(np.array([0, 0, 1, 1, 1])[holdout]).tolist() == [1, 1]
    with pytest.raises(ValueError, match="at least 2 per class"):
        holdout_split(np.array([0, 0, 1]), 0.1, 0)


@pytest.mark.parametrize(
    "budget, per_class",
    [(Budget("1/class", per_class=1), [1, 1, 1]), (Budget("3/class", per_class=3), [3, 3, 3]),
     (Budget("50%", fraction=0.5), [18, 14, 9]), (Budget("100%", fraction=1.0), [36, 27, 18]),
     (Budget("5%", fraction=0.05), [2, 1, 1])],
)
def test_budget_picks_are_stratified_from_the_pool(budget, per_class):
    pool, holdout = holdout_split(LABELS, 0.1, seed=1)
    picks = budget_picks(LABELS, pool, budget, seed=1)
    assert set(picks) <= set(pool)
    assert len(set(picks.tolist())) == len(picks)
    assert np.bincount(LABELS[picks], minlength=3).tolist() == per_class


def test_picks_change_with_the_seed():
    pool, _ = holdout_split(LABELS, 0.1, seed=0)
    budget = Budget("10%", fraction=0.1)
    assert not np.array_equal(budget_picks(LABELS, pool, budget, 0), budget_picks(LABELS, pool, budget, 1))


def test_a_budget_needs_exactly_one_size():
    with pytest.raises(ValueError):
        Budget("x")
    with pytest.raises(ValueError):
        Budget("x", per_class=1, fraction=0.5)


class RecordingHead(SoftmaxHead):
    """The real head, recording what it was trained on (to check no holdout row leaks into training)."""

    seen: list[np.ndarray] = []

    def fit(self, X, y):
        RecordingHead.seen.append(np.asarray(X).copy())
        return super().fit(X, y)


def _embeddings(labels, dim=8, seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((labels.max() + 1, dim)) * 2
    return (centers[labels] + rng.standard_normal((len(labels), dim))).astype(np.float32)


def test_run_curve_trains_every_budget_and_seed_without_touching_the_holdout():
    X = _embeddings(LABELS)
    X[:, 0] = np.arange(len(X))  # a row id in the first column, to trace rows into fits
    RecordingHead.seen = []
    calls = []
    result = run_curve(X, LABELS, lambda seed: RecordingHead(random_state=seed), seeds=[0, 1],
                       progress=calls.append, dataset="blobs", backbone="none", class_names=["a", "b", "c"])
    assert len(RecordingHead.seen) == len(calls) == 2 * len(DEFAULT_BUDGETS)
    for k, seen in enumerate(RecordingHead.seen):
        seed = k // len(DEFAULT_BUDGETS)
        _, holdout = holdout_split(LABELS, 0.1, seed)
        assert set(seen[:, 0].astype(int)).isdisjoint(holdout)
    by_name = {b.budget: b for b in result.budgets}
    assert by_name["1/class"].n_labels == 3 and by_name["3/class"].n_labels == 9
    assert by_name["100%"].n_labels == 81
    assert all(len(b.accuracies) == 2 for b in result.budgets)
    assert result.timing["train_s"] > 0


def test_curve_documents_hold_the_required_fields():
    X = _embeddings(LABELS)
    result = run_curve(X, LABELS, lambda seed: SoftmaxHead(random_state=seed), seeds=[0, 1, 2],
                       dataset="blobs", backbone="fake-1")
    result.timing.update(embed_s=1.0, total_s=2.0)
    document = json.loads(json.dumps(result.to_dict()))
    assert {"dataset", "backbone", "n_images", "budgets", "timing"} <= set(document)
    assert document["n_images"] == 90
    first = document["budgets"][0]
    assert first["budget"] == "1/class" and first["n_labels"] == 3
    assert first["accuracy_min"] <= first["accuracy_mean"] <= first["accuracy_max"]
    assert {"embed_s", "train_s", "total_s"} <= set(document["timing"])
    # well separated blobs: all labels give a near perfect holdout
    assert document["budgets"][-1]["accuracy_mean"] > 0.9
    rows = list(csv.DictReader(io.StringIO(result.to_csv())))
    assert [r["budget"] for r in rows] == [b.name for b in DEFAULT_BUDGETS]
    assert {"accuracy_seed_0", "accuracy_seed_2"} <= set(rows[0])
    table = result.table({"1/class": 0.5})
    assert "1/class" in table and "baseline" in table


def test_augmented_copies_join_their_originals_only():
    X = _embeddings(LABELS)
    augmented = np.stack([X + 0.01, X - 0.01], axis=1)  # (n, 2, d)
    RecordingHead.seen = []
    result = run_curve(X, LABELS, lambda seed: RecordingHead(random_state=seed), seeds=[0],
                       budgets=[Budget("1/class", per_class=1)], augmented=augmented)
    assert len(RecordingHead.seen[0]) == 3 * 3  # 3 originals + 2 copies each
    assert result.augment == 2


def test_study_points_on_the_labels_per_class_axis():
    assert study_labels_per_class("3/class") == 3
    assert study_labels_per_class("100%") == pytest.approx(3670 * 0.9 / 5)
    assert study_labels_per_class("5%") == pytest.approx(0.05 * 3670 * 0.9 / 5)


def test_plot_writes_a_png(tmp_path):
    X = _embeddings(LABELS)
    result = run_curve(X, LABELS, lambda seed: SoftmaxHead(random_state=seed), seeds=[0, 1],
                       budgets=DEFAULT_BUDGETS[:4])
    path = plot_curve(result.to_dict(), tmp_path / "out" / "curve.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert path.stat().st_size > 10_000


def test_plotting_leaves_the_callers_matplotlib_backend_alone(tmp_path):
    import importlib

    import matplotlib

    import learner.plots

    before = matplotlib.get_backend()
    try:
        matplotlib.use("svg")  # a notebook's choice
        importlib.reload(learner.plots)  # what importing it for the first time does
        curve = run_curve(np.random.default_rng(0).normal(size=(90, 4)), LABELS,
                          lambda seed: SoftmaxHead(max_iter=20, random_state=seed), seeds=[0],
                          budgets=[Budget("1/class", per_class=1)]).to_dict()
        learner.plots.plot_curve(curve, tmp_path / "curve.png")
        assert matplotlib.get_backend() == "svg"
    finally:
        matplotlib.use(before)
    assert (tmp_path / "curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _result_from(accuracies_by_budget, seeds=(0, 1)):
    from learner.curve import BudgetResult, CurveResult

    n_labels = {"1/class": 10, "3/class": 30, "5%": 320, "10%": 630, "20%": 1260, "50%": 3150, "100%": 6300}
    budgets = [BudgetResult(name, n_labels[name], n_labels[name] / 10, list(acc), []) for name, acc in accuracies_by_budget.items()]
    return CurveResult("made-up", "none", 7000, [str(i) for i in range(10)], list(seeds), 0.1, 0, budgets)


def test_curve_forecast_predicts_the_large_budgets_from_the_small_ones():
    from learner.curve import curve_forecast, forecast_table
    from learner.forecast import power_law

    def acc(n, shift=0.0):
        return float(power_law(n, 0.92, 1.2, 0.45)) + shift

    sizes = {"1/class": 10, "3/class": 30, "5%": 320, "10%": 630, "20%": 1260, "50%": 3150, "100%": 6300}
    result = _result_from({name: (acc(n, -0.004), acc(n, 0.004)) for name, n in sizes.items()})
    document = json.loads(json.dumps(curve_forecast(result, 700, max_multiple=10)))
    assert document["fitted_on"] == ["1/class", "3/class", "5%", "10%"] and document["refused"] is None
    hundred = document["budgets"]["100%"]
    assert set(hundred) >= {"n_labels", "predicted", "low", "high", "measured"}
    assert abs(hundred["predicted"] - hundred["measured"]) < 0.02
    assert len(document["per_seed"]) == 2 and document["summary"]["band_cases"] == 6
    assert "100%" in forecast_table(document)


def test_curve_forecast_refuses_beyond_the_multiple():
    from learner.curve import curve_forecast

    sizes = ("1/class", "3/class", "5%", "10%", "20%", "50%", "100%")
    result = _result_from({name: (0.5 + 0.05 * i,) for i, name in enumerate(sizes)}, seeds=(0,))
    document = curve_forecast(result, 700, max_multiple=4, backtest_tolerance=0.5)
    assert document["budgets"]["20%"]["predicted"] is not None
    assert document["budgets"]["100%"]["predicted"] is None and "4x" in document["budgets"]["100%"]["refused"]


def test_plot_draws_the_forecast_member(tmp_path):
    from learner.curve import curve_forecast
    from learner.forecast import error_power_law

    sizes = {"1/class": 10, "3/class": 30, "5%": 320, "10%": 630, "20%": 1260, "50%": 3150, "100%": 6300}
    result = _result_from({name: (float(error_power_law(n, 1.5, 0.3)),) for name, n in sizes.items()}, seeds=(0,))
    document = result.to_dict()
    document["forecast"] = curve_forecast(result, 700, max_multiple=10)
    without = plot_curve(result.to_dict(), tmp_path / "plain.png").read_bytes()
    drawn = plot_curve(document, tmp_path / "forecast.png").read_bytes()
    assert drawn[:8] == b"\x89PNG\r\n\x1a\n" and drawn != without
