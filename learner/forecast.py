"""The dataset juicer: how much accuracy the next labels buy, from the points measured so far.

A point is one measured model: ``n_labels`` it was trained on, its ``accuracy`` on a holdout of
``n_holdout`` items (and, optionally, which of those items it got right). :func:`fit_forecast` fits a
saturating learning curve to the points and answers three questions, each with an 80% band:

- the expected accuracy at ``n`` labels (:meth:`Forecast.predict`);
- the labels needed to reach a target accuracy, or "not reachable: the curve levels off near A%"
  (:meth:`Forecast.labels_for`);
- the accuracy gained by the next 100 labels (:meth:`Forecast.gain_per_100`).

Three curve families are fitted by weighted least squares, weighting larger ``n`` more (the i-th smallest
of m points weighs i / m; Figueroa et al. 2012 found weighting larger samples more best for extrapolating
learning curves):

- ``power_law``: ``a - b * n^(-c)``, ``a <= 1`` (the asymptote), ``b, c > 0``;
- ``error_power_law``: ``1 - b * n^(-c)``, the same without a floor: the error keeps falling as a power of
  n (Hestness et al. 2017's power-law region); fitted as a weighted straight line through (log n, log error). With only a few small-n points the 3-parameter law tends to
  level off too early; this one tends to promise a little too much; the backtest decides;
- ``mmf`` (Morgan-Mercer-Flodin): ``(a*b + c*n^d) / (b + n^d)``, ``c <= 1`` the asymptote.

The family kept is the one with the smaller **backtest** error: fit on every point but the newest (largest
n) quarter, predict those, take the largest absolute miss. The band comes from a bootstrap that redraws
both the holdout items' correctness (so a small holdout honestly widens it; items are redrawn jointly when
every point carries its per-item correctness on one shared holdout, else each point's accuracy is redrawn
as a binomial of its holdout size) and the points themselves (cases resampled with replacement), refitting
the kept family each time.

It refuses, with a reason, rather than guess: fewer than :data:`MIN_POINTS` distinct n; a backtest miss
above ``backtest_tolerance``; and, per question, any ``n`` beyond ``max_multiple`` times the largest
labelled n. The backtest error is always reported. A curve whose measured accuracy falls as labels grow by
more than holdout noise explains (Viering and Loog 2022 and LCDB 1.1 report such ill-behaved curves) is
flagged in :attr:`Forecast.non_monotone`.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np
from scipy.optimize import least_squares

logger = logging.getLogger(__name__)

MIN_POINTS = 4
DEFAULT_MAX_MULTIPLE = 4.0
DEFAULT_BACKTEST_TOLERANCE = 0.03
DEFAULT_BAND = 0.8
DEFAULT_BOOTSTRAP = 200
FAMILIES = ("power_law", "error_power_law", "mmf")


@dataclass(frozen=True)
class Point:
    """One measured model: labels used, holdout accuracy, holdout size, optionally per-item correctness."""

    n_labels: int
    accuracy: float
    n_holdout: int
    correct: np.ndarray | None = field(default=None, repr=False, compare=False)


# ---------------------------------------------------------------------------------------------- the families


def power_law(n: np.ndarray, a: float, b: float, c: float) -> np.ndarray:
    """``a - b * n^(-c)``: rises towards the asymptote ``a``."""
    return a - b * np.power(np.asarray(n, dtype=np.float64), -c)


def error_power_law(n: np.ndarray, b: float, c: float) -> np.ndarray:
    """``1 - b * n^(-c)``: the error falls as a power of n with no floor (a straight line in log-log)."""
    return 1.0 - b * np.power(np.asarray(n, dtype=np.float64), -c)


def mmf(n: np.ndarray, a: float, b: float, c: float, d: float) -> np.ndarray:
    """Morgan-Mercer-Flodin ``(a*b + c*n^d) / (b + n^d)``: ``a`` at n=0, ``c`` as n grows."""
    nd = np.power(np.asarray(n, dtype=np.float64), d)
    return (a * b + c * nd) / (b + nd)


@dataclass(frozen=True)
class _Family:
    name: str
    function: Callable[..., np.ndarray]
    n_params: int
    lower: tuple[float, ...]
    upper: tuple[float, ...]
    asymptote: Callable[[np.ndarray], float]
    starts: Callable[[np.ndarray, np.ndarray], list[list[float]]]


def _power_starts(n: np.ndarray, y: np.ndarray) -> list[list[float]]:
    top = float(min(max(y.max() + 0.02, 0.05), 1.0))
    return [[top, max(top - y.min(), 1e-3) * n.min() ** c, c] for c in (0.2, 0.5, 1.0)]


def _mmf_starts(n: np.ndarray, y: np.ndarray) -> list[list[float]]:
    top = float(min(max(y.max() + 0.02, 0.05), 1.0))
    middle = float(np.median(n))
    return [[max(float(y.min()) - 0.05, 0.0), middle ** d, top, d] for d in (0.5, 1.0)]


_ERROR_EXPONENT = (0.0, 3.0)


_FAMILIES: dict[str, _Family] = {
    "power_law": _Family("power_law", power_law, 3, (0.0, 0.0, 1e-3), (1.0, 1e6, 3.0), lambda p: float(p[0]), _power_starts),
    # Fitted in closed form in fit_family (log-log least squares), so no bounds or starts are used.
    "error_power_law": _Family("error_power_law", error_power_law, 2, (0.0, 0.0), (math.inf, 3.0), lambda p: 1.0,
                               lambda n, y: []),
    "mmf": _Family("mmf", mmf, 4, (0.0, 1e-9, 0.0, 1e-2), (1.0, 1e12, 1.0, 5.0), lambda p: float(p[2]), _mmf_starts),
}


def fit_family(
    family: str, n: np.ndarray, y: np.ndarray, weights: np.ndarray | None = None, start: np.ndarray | None = None
) -> np.ndarray | None:
    """Weighted least-squares parameters of ``family`` through (n, y), or None when it cannot be fitted.

    A family needs at least as many distinct n as it has parameters. ``start`` (a previous fit) replaces
    the built-in starting points, which is what the bootstrap's refits use.
    """
    spec = _FAMILIES[family]
    n = np.asarray(n, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if len(np.unique(n)) < spec.n_params:
        return None
    w = np.ones_like(n) if weights is None else np.sqrt(np.asarray(weights, dtype=np.float64))
    if family == "error_power_law":
        # A straight line through (log n, log error): least squares on relative, not absolute, error.
        error = np.clip(1 - y, 1e-4, 1)
        design = np.vstack([np.ones_like(n), -np.log(n)]).T
        (log_b, c), *_ = np.linalg.lstsq(design * w[:, None], np.log(error) * w, rcond=None)
        return np.array([math.exp(log_b), float(np.clip(c, *_ERROR_EXPONENT))])
    best, best_cost = None, math.inf
    for start in ([start] if start is not None else spec.starts(n, y)):
        start = np.clip(start, np.add(spec.lower, 1e-9), np.subtract(spec.upper, 1e-9))
        try:
            fitted = least_squares(lambda p: w * (spec.function(n, *p) - y), start, bounds=(spec.lower, spec.upper),
                                   method="trf", max_nfev=300)
        except (ValueError, FloatingPointError):
            continue
        if np.all(np.isfinite(fitted.x)) and fitted.cost < best_cost:
            best, best_cost = fitted.x, fitted.cost
    return best


def rank_weights(n: np.ndarray) -> np.ndarray:
    """Weights growing with n: the i-th smallest of m points weighs i / m (ties share their mean rank)."""
    n = np.asarray(n, dtype=np.float64)
    order = np.argsort(n, kind="stable")
    ranks = np.empty(len(n))
    ranks[order] = np.arange(1, len(n) + 1)
    for value in np.unique(n):
        same = n == value
        ranks[same] = ranks[same].mean()
    return ranks / len(n)


# ---------------------------------------------------------------------------------------------- the answers


@dataclass(frozen=True)
class Prediction:
    """Expected accuracy at ``n_labels`` with its band, or why there is none."""

    n_labels: float
    expected: float | None
    low: float | None
    high: float | None
    refused: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class LabelsToTarget:
    """Labels needed to reach ``target`` accuracy (total, and more than now), or why it cannot be said."""

    target: float
    n_labels: float | None
    more_labels: float | None
    low: float | None
    high: float | None
    reachable: bool
    refused: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class Backtest:
    """The family fitted on all but the newest points, and how far it missed them."""

    family: str
    fitted_on: list[int]
    predicted_n: list[int]
    predicted: list[float]
    measured: list[float]
    error: float | None

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class Forecast:
    """A fitted learning curve and the questions it can answer (see the module docstring)."""

    points: list[Point]
    family: str | None
    params: np.ndarray | None
    replicates: np.ndarray  # (B, n_params) bootstrap refits of the kept family
    backtests: dict[str, Backtest]
    max_multiple: float
    band: float
    refused: str | None
    non_monotone: list[str]

    @property
    def n_max(self) -> int:
        """The largest labelled n among the points."""
        return max((p.n_labels for p in self.points), default=0)

    @property
    def limit_n(self) -> float:
        """The largest n the forecast answers for (``max_multiple`` times the largest labelled n)."""
        return self.max_multiple * self.n_max

    @property
    def backtest_error(self) -> float | None:
        """The kept family's backtest miss (or the best one's when refused)."""
        if self.family is not None and self.family in self.backtests:
            return self.backtests[self.family].error
        errors = [b.error for b in self.backtests.values() if b.error is not None]
        return min(errors) if errors else None

    def _curve(self, params: np.ndarray, n: np.ndarray) -> np.ndarray:
        return _FAMILIES[self.family].function(n, *params)

    def _quantiles(self, values: np.ndarray) -> tuple[float | None, float | None]:
        values = values[np.isfinite(values)]
        if not len(values):
            return None, None
        tail = (1 - self.band) / 2
        return float(np.quantile(values, tail)), float(np.quantile(values, 1 - tail))

    def expected_curve(self, n: Sequence[float] | np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(expected, low, high) at every ``n`` (for plots); raises ``ValueError`` when refused."""
        if self.refused or self.params is None:
            raise ValueError(f"no forecast: {self.refused}")
        n = np.asarray(n, dtype=np.float64)
        expected = self._curve(self.params, n)
        if len(self.replicates):
            draws = np.stack([self._curve(p, n) for p in self.replicates])
            tail = (1 - self.band) / 2
            low, high = np.quantile(draws, tail, axis=0), np.quantile(draws, 1 - tail, axis=0)
        else:
            low = high = expected
        return expected, np.minimum(low, expected), np.maximum(high, expected)

    def _beyond(self, n: float) -> str | None:
        if n > self.limit_n:
            return (f"{n:,.0f} labels is more than {self.max_multiple:g}x the largest labelled n ({self.n_max:,}); "
                    "label more before asking that far ahead")
        return None

    def predict(self, n_labels: float) -> Prediction:
        """Expected accuracy at ``n_labels`` with its band; refused beyond the limit or when the fit is."""
        reason = self.refused or self._beyond(n_labels)
        if reason:
            return Prediction(float(n_labels), None, None, None, reason)
        expected, low, high = (float(v[0]) for v in self.expected_curve([n_labels]))
        return Prediction(float(n_labels), expected, low, high)

    def asymptote(self) -> tuple[float | None, float | None, float | None]:
        """Where the curve levels off: (expected, low, high)."""
        if self.params is None:
            return None, None, None
        spec = _FAMILIES[self.family]
        low, high = self._quantiles(np.array([spec.asymptote(p) for p in self.replicates]))
        return spec.asymptote(self.params), low, high

    def _solve(self, params: np.ndarray, target: float) -> float:
        """Smallest n with curve(n) >= target (inf when it levels off below target)."""
        spec = _FAMILIES[self.family]
        if spec.asymptote(params) <= target:
            return math.inf
        if self._curve(params, np.array([1.0]))[0] >= target:
            return 1.0
        lo, hi = 1.0, 2.0
        while self._curve(params, np.array([hi]))[0] < target:
            lo, hi = hi, hi * 2
            if hi > 1e15:
                return math.inf
        for _ in range(60):  # bisection in log n
            middle = math.sqrt(lo * hi)
            if self._curve(params, np.array([middle]))[0] >= target:
                hi = middle
            else:
                lo = middle
        return hi

    def labels_for(self, target: float) -> LabelsToTarget:
        """Labels needed to reach ``target`` accuracy, with a band; unreachable or beyond the limit say why."""
        if self.refused or self.params is None:
            return LabelsToTarget(target, None, None, None, None, False, self.refused)
        needed = self._solve(self.params, target)
        draws = np.array([self._solve(p, target) for p in self.replicates]) if len(self.replicates) else np.array([needed])
        tail = (1 - self.band) / 2
        # inf (never reached) sorts last, so the quantiles of the draws are the band's ends as they are.
        low, high = (float(np.sort(draws)[int(round(q * (len(draws) - 1)))]) for q in (tail, 1 - tail))
        low = None if not math.isfinite(low) else low
        high = None if not math.isfinite(high) else high
        if not math.isfinite(needed):
            level = self.asymptote()[0]
            return LabelsToTarget(target, None, None, low, high, False,
                                  f"not reachable: the curve levels off near {level:.1%}")
        if needed <= self.n_max:
            return LabelsToTarget(target, needed, 0.0, low, high, True)
        reason = self._beyond(needed)
        if reason:
            return LabelsToTarget(target, None, None, low, high, True,
                                  f"would need about {needed:,.0f} labels, beyond the forecast's reach: {reason}")
        return LabelsToTarget(target, needed, needed - self.n_max, low, high, True)

    def gain_per_100(self) -> Prediction:
        """Accuracy the next 100 labels buy now (expected and band, in accuracy units)."""
        if self.refused or self.params is None:
            return Prediction(100.0, None, None, None, self.refused)
        now, after = float(self.n_max), float(self.n_max + 100)
        gain = float(self._curve(self.params, np.array([after]))[0] - self._curve(self.params, np.array([now]))[0])
        draws = np.array([self._curve(p, np.array([after]))[0] - self._curve(p, np.array([now]))[0] for p in self.replicates])
        low, high = self._quantiles(draws) if len(draws) else (gain, gain)
        return Prediction(100.0, gain, min(low, gain), max(high, gain))

    def to_dict(self, targets: Sequence[float] = ()) -> dict[str, Any]:
        """JSON-ready: family, parameters, band, backtests, refusals, answers for ``targets``."""
        asymptote, asymptote_low, asymptote_high = self.asymptote()
        return {
            "family": self.family,
            "params": None if self.params is None else [float(v) for v in self.params],
            "band": self.band,
            "points": [{"n_labels": p.n_labels, "accuracy": p.accuracy, "n_holdout": p.n_holdout} for p in self.points],
            "n_max": self.n_max,
            "limit_n": self.limit_n,
            "max_multiple": self.max_multiple,
            "refused": self.refused,
            "backtest_error": self.backtest_error,
            "backtests": {name: b.to_dict() for name, b in self.backtests.items()},
            "non_monotone": list(self.non_monotone),
            "asymptote": None if self.refused else {"expected": asymptote, "low": asymptote_low, "high": asymptote_high},
            "gain_per_100": self.gain_per_100().to_dict(),
            "targets": [self.labels_for(t).to_dict() for t in targets],
        }


# ---------------------------------------------------------------------------------------------- fitting


def _arrays(points: Sequence[Point]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    n = np.array([p.n_labels for p in points], dtype=np.float64)
    y = np.array([p.accuracy for p in points], dtype=np.float64)
    h = np.array([p.n_holdout for p in points], dtype=np.float64)
    return n, y, h


def find_non_monotone(points: Sequence[Point], z: float = 2.0) -> list[str]:
    """Where measured accuracy falls as labels grow by more than ``z`` standard errors of holdout noise."""
    pts = sorted(points, key=lambda p: p.n_labels)
    found = []
    best = None
    for p in pts:
        if best is not None and p.n_labels > best.n_labels:
            se = math.sqrt(sum(max(q.accuracy * (1 - q.accuracy), 1e-4) / max(q.n_holdout, 1) for q in (best, p)))
            if best.accuracy - p.accuracy > z * se:
                found.append(f"accuracy fell from {best.accuracy:.1%} at {best.n_labels:,} labels to {p.accuracy:.1%} at "
                             f"{p.n_labels:,} labels, more than holdout noise explains (non-monotone curve)")
        if best is None or p.accuracy > best.accuracy:
            best = p
    return found


def backtest(family: str, points: Sequence[Point], newest: int | None = None) -> Backtest | None:
    """Fit ``family`` on all but the ``newest`` (largest n) points and predict those; None if it cannot."""
    pts = sorted(points, key=lambda p: p.n_labels)
    newest = newest if newest is not None else max(1, len(pts) // 4)
    train, test = pts[:-newest], pts[-newest:]
    n, y, _ = _arrays(train)
    params = fit_family(family, n, y, rank_weights(n))
    if params is None:
        return None
    tn, ty, _ = _arrays(test)
    predicted = _FAMILIES[family].function(tn, *params)
    return Backtest(family, [p.n_labels for p in train], [p.n_labels for p in test],
                    [float(v) for v in predicted], [float(v) for v in ty], float(np.max(np.abs(predicted - ty))))


def _resampled_accuracies(points: Sequence[Point], rng: np.random.Generator) -> np.ndarray:
    correct = [p.correct for p in points]
    if all(c is not None for c in correct) and len({len(c) for c in correct}) == 1 and len(correct[0]):
        rows = rng.integers(0, len(correct[0]), len(correct[0]))  # one redraw of the shared holdout
        return np.array([np.asarray(c, dtype=np.float64)[rows].mean() for c in correct])
    _, y, h = _arrays(points)
    h = np.maximum(h, 1)
    return rng.binomial(h.astype(np.int64), np.clip(y, 0, 1)) / h


def fit_forecast(
    points: Sequence[Point],
    *,
    max_multiple: float = DEFAULT_MAX_MULTIPLE,
    backtest_tolerance: float = DEFAULT_BACKTEST_TOLERANCE,
    band: float = DEFAULT_BAND,
    n_bootstrap: int = DEFAULT_BOOTSTRAP,
    families: Sequence[str] = FAMILIES,
    random_state: int = 0,
) -> Forecast:
    """Fit the learning curve to ``points`` and bootstrap its band; see the module docstring for refusals."""
    if not 0 < band < 1:
        raise ValueError(f"band must be within (0, 1), got {band}")
    if max_multiple < 1:
        raise ValueError(f"max_multiple must be at least 1, got {max_multiple}")
    unknown = [f for f in families if f not in _FAMILIES]
    if unknown:
        raise ValueError(f"unknown curve families {unknown}; choose from {', '.join(_FAMILIES)}")
    pts = sorted(points, key=lambda p: p.n_labels)
    if any(p.n_labels < 1 or not 0 <= p.accuracy <= 1 for p in pts):
        raise ValueError("points need n_labels >= 1 and an accuracy within [0, 1]")
    non_monotone = find_non_monotone(pts)

    def refuse(reason: str, backtests: dict[str, Backtest] | None = None) -> Forecast:
        return Forecast(pts, None, None, np.zeros((0, 0)), backtests or {}, max_multiple, band, reason, non_monotone)

    distinct = len({p.n_labels for p in pts})
    if distinct < MIN_POINTS:
        return refuse(f"needs at least {MIN_POINTS} measured points with different label counts, has {distinct}")

    backtests = {}
    for family in families:
        result = backtest(family, pts)
        if result is not None:
            backtests[family] = result
    if not backtests:
        return refuse("no curve family could be fitted on the older points (backtest impossible)")
    # Ties go to the earlier family in `families` (the power law: fewer parameters).
    family = min(backtests, key=lambda f: (backtests[f].error, list(families).index(f)))
    error = backtests[family].error
    if error > backtest_tolerance:
        return refuse(f"its own backtest missed by {error:.1%} (tolerance {backtest_tolerance:.1%}): fitted on "
                      f"{backtests[family].fitted_on[-1]:,} labels and less, it did not predict the newest points",
                      backtests)

    n, y, _ = _arrays(pts)
    params = fit_family(family, n, y, rank_weights(n))
    if params is None:
        return refuse(f"the {family} curve could not be fitted to the points", backtests)

    rng = np.random.default_rng(random_state)
    replicates = []
    for _ in range(n_bootstrap):
        accuracies = _resampled_accuracies(pts, rng)
        rows = rng.integers(0, len(pts), len(pts))
        if len(np.unique(n[rows])) < _FAMILIES[family].n_params:
            continue  # a draw too thin to fit the curve says nothing about the band
        refit = fit_family(family, n[rows], accuracies[rows], rank_weights(n[rows]), start=params)
        if refit is not None:
            replicates.append(refit)
    logger.debug("forecast: %s %s, %d/%d bootstrap refits, backtest error %.4f", family, params, len(replicates),
                 n_bootstrap, error)
    return Forecast(pts, family, params, np.array(replicates).reshape(len(replicates), -1), backtests, max_multiple,
                    band, None, non_monotone)


def half_backtest(points: Sequence[Point], max_multiple: float = 1e9, **options: Any) -> dict[str, Any]:
    """Fit on the older half of ``points`` (smaller n), predict the newer half: what ``juicer simulate`` reports.

    ``max_multiple`` defaults to no limit, so every later point gets a prediction to compare (the refusal
    limit is reported beside it). Returns the fit's family, backtest error and refusal, and per later point
    the prediction, band, measured value and error; ``covered`` is the share inside the band.
    """
    pts = sorted(points, key=lambda p: p.n_labels)
    older, newer = pts[: len(pts) // 2], pts[len(pts) // 2:]
    forecast = fit_forecast(older, max_multiple=max_multiple, **options)
    rows = []
    for p in newer:
        prediction = forecast.predict(p.n_labels)
        error = None if prediction.expected is None else prediction.expected - p.accuracy
        inside = None if prediction.expected is None else prediction.low <= p.accuracy <= prediction.high
        rows.append({"n_labels": p.n_labels, "predicted": prediction.expected, "low": prediction.low,
                     "high": prediction.high, "measured": p.accuracy, "error": error, "covered": inside,
                     "multiple": p.n_labels / forecast.n_max if forecast.n_max else None})
    judged = [row["covered"] for row in rows if row["covered"] is not None]
    return {"fitted_on": [p.n_labels for p in older], "family": forecast.family, "refused": forecast.refused,
            "backtest_error": forecast.backtest_error, "predictions": rows,
            "covered": sum(judged) / len(judged) if judged else None}
