"""The forecast on hand-made curves: a clean power law, too few points, a ragged curve, a falling one."""

import numpy as np
import pytest

from learner.forecast import Point, error_power_law, fit_forecast, find_non_monotone, mmf, power_law

N_LABELS = (10, 20, 40, 80, 160, 320)


def curve_points(function, n_labels=N_LABELS, n_holdout=5000):
    return [Point(n, float(function(np.array([n]))[0]), n_holdout) for n in n_labels]


def clean_power_law(n):
    return power_law(n, 0.9, 0.8, 0.5)


def test_a_clean_power_law_is_extrapolated_within_a_point():
    forecast = fit_forecast(curve_points(clean_power_law), n_bootstrap=40)
    assert forecast.refused is None
    assert forecast.backtest_error < 0.005
    prediction = forecast.predict(1000)
    truth = float(clean_power_law(np.array([1000]))[0])
    assert abs(prediction.expected - truth) < 0.01
    assert prediction.low <= prediction.expected <= prediction.high


def test_a_clean_mmf_curve_is_fitted_by_some_family_within_a_point():
    def function(n):
        return mmf(n, 0.2, 30.0, 0.95, 1.0)

    forecast = fit_forecast(curve_points(function), n_bootstrap=40)
    assert forecast.refused is None
    assert abs(forecast.predict(640).expected - float(function(np.array([640]))[0])) < 0.01


def test_a_curve_without_a_floor_is_kept_by_the_backtest_and_extrapolated():
    def function(n):
        return error_power_law(n, 1.5, 0.3)

    forecast = fit_forecast(curve_points(function), n_bootstrap=40)
    assert forecast.family == "error_power_law" and forecast.refused is None
    assert abs(forecast.predict(1280).expected - float(function(np.array([1280]))[0])) < 0.005


def test_labels_to_a_reachable_target_lie_between_now_and_the_limit():
    forecast = fit_forecast(curve_points(clean_power_law), n_bootstrap=40)
    answer = forecast.labels_for(0.87)
    # 0.9 - 0.8 n^-0.5 = 0.87  ->  n = (0.8 / 0.03)^2 = 711
    assert answer.reachable and answer.refused is None
    assert 500 < answer.n_labels < 1000
    assert answer.more_labels == pytest.approx(answer.n_labels - 320)


def test_a_target_above_the_asymptote_is_not_reachable_and_says_where_it_levels_off():
    forecast = fit_forecast(curve_points(clean_power_law), n_bootstrap=40)
    answer = forecast.labels_for(0.95)
    assert not answer.reachable
    assert "levels off near 90" in answer.refused


def test_a_target_far_beyond_the_labels_is_refused_as_out_of_reach():
    forecast = fit_forecast(curve_points(clean_power_law), n_bootstrap=40)
    answer = forecast.labels_for(0.895)  # needs ~25,600 labels, 80x the largest n
    assert answer.n_labels is None and "beyond the forecast's reach" in answer.refused


def test_gain_per_100_labels_is_positive_and_shrinking():
    early = fit_forecast(curve_points(clean_power_law, N_LABELS[:4]), n_bootstrap=40).gain_per_100()
    late = fit_forecast(curve_points(clean_power_law), n_bootstrap=40).gain_per_100()
    assert early.expected > late.expected > 0


def test_fewer_than_four_points_are_refused_with_the_reason():
    forecast = fit_forecast(curve_points(clean_power_law, (10, 20, 40)))
    assert forecast.refused and "at least 4" in forecast.refused
    prediction = forecast.predict(80)
    assert prediction.expected is None and prediction.refused == forecast.refused
    assert forecast.to_dict()["refused"] == forecast.refused


def test_n_beyond_the_configured_multiple_is_refused():
    forecast = fit_forecast(curve_points(clean_power_law), max_multiple=4, n_bootstrap=20)
    assert forecast.predict(4 * 320).refused is None
    refused = forecast.predict(4 * 320 + 1)
    assert refused.expected is None and "4x" in refused.refused


def test_a_backtest_miss_over_the_tolerance_refuses_and_reports_the_error():
    accuracies = (0.30, 0.50, 0.60, 0.64, 0.66, 0.95)  # the newest point jumps far above the trend
    points = [Point(n, a, 5000) for n, a in zip(N_LABELS, accuracies)]
    forecast = fit_forecast(points, backtest_tolerance=0.03, n_bootstrap=20)
    assert forecast.refused and "backtest missed" in forecast.refused
    assert forecast.backtest_error > 0.03
    assert forecast.to_dict()["backtest_error"] == pytest.approx(forecast.backtest_error)


def test_a_falling_curve_is_flagged_non_monotone():
    accuracies = (0.50, 0.70, 0.80, 0.70, 0.72, 0.73)
    points = [Point(n, a, 2000) for n, a in zip(N_LABELS, accuracies)]
    found = find_non_monotone(points)
    assert len(found) >= 1 and "80.0% at 40 labels" in found[0]
    assert fit_forecast(points, n_bootstrap=10).non_monotone == found


def test_a_dip_within_holdout_noise_is_not_flagged():
    points = [Point(n, a, 100) for n, a in zip(N_LABELS, (0.5, 0.7, 0.8, 0.78, 0.82, 0.83))]
    assert find_non_monotone(points) == []


def test_the_band_widens_for_a_small_holdout():
    def width(n_holdout):
        forecast = fit_forecast(curve_points(clean_power_law, n_holdout=n_holdout), n_bootstrap=60, random_state=1)
        prediction = forecast.predict(800)
        return prediction.high - prediction.low

    assert width(100) > 2 * width(20000)


def test_per_item_correctness_on_one_holdout_is_resampled_jointly():
    rng = np.random.default_rng(0)
    points = []
    for n in N_LABELS:
        accuracy = float(clean_power_law(np.array([n]))[0])
        correct = rng.random(400) < accuracy
        points.append(Point(n, float(correct.mean()), 400, correct=correct))
    forecast = fit_forecast(points, n_bootstrap=40, backtest_tolerance=0.1)
    assert forecast.refused is None
    assert len(forecast.replicates) > 20


def test_to_dict_answers_the_asked_targets():
    document = fit_forecast(curve_points(clean_power_law), n_bootstrap=20).to_dict(targets=(0.85, 0.99))
    assert [t["target"] for t in document["targets"]] == [0.85, 0.99]
    assert document["family"] in ("power_law", "mmf") and document["limit_n"] == 4 * 320
    assert document["targets"][1]["reachable"] is False


def test_bad_points_are_a_value_error():
    with pytest.raises(ValueError):
        fit_forecast([Point(0, 0.5, 10)] * 4)


def test_half_backtest_predicts_the_newer_half_from_the_older():
    from learner.forecast import half_backtest

    points = curve_points(clean_power_law, (10, 20, 30, 40, 60, 80, 100, 120, 160, 200))
    result = half_backtest(points, n_bootstrap=30)
    assert result["fitted_on"] == [10, 20, 30, 40, 60] and result["refused"] is None
    assert [row["n_labels"] for row in result["predictions"]] == [80, 100, 120, 160, 200]
    assert all(abs(row["error"]) < 0.01 for row in result["predictions"])
