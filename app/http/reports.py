"""Accuracy-versus-labels reports from the points of ``GET /v1/report``: a PNG, an HTML page, a text table.

A point is one model version, as the JSON API gives it::

    {"model_version": "v3", "n_labels": 40, "labels_per_class": {"shirt": 4, ...},
     "holdout_accuracy": 0.71, "coverage": {"0.5": 0.93, "0.8": 0.55},
     "selective_accuracy": {"0.5": 0.74, "0.8": 0.92}, "created": "2026-11-28T21:40:00+00:00"}

Pure functions of the points (no store, no Flask), so the views, the CLI and the tests share them.
"""

from __future__ import annotations

import base64
import functools
import io
import math
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, NullFormatter, PercentFormatter

from app.store import ModelVersion
from learner.study import STUDY_LABEL, STUDY_POINTS

PNG_SIZE_IN = (8.0, 5.0)
PNG_DPI = 100
PLOT_THRESHOLD = "0.8"
TOO_SMALL = "holdout too small to measure"


@dataclass(frozen=True)
class ReportPoint:
    """One model version's figures (see the module docstring for the JSON it is read from)."""

    model_version: str
    n_labels: int
    holdout_accuracy: float | None
    labels_per_class: dict[str, int] = field(default_factory=dict)
    coverage: dict[str, float | None] = field(default_factory=dict)
    selective_accuracy: dict[str, float | None] = field(default_factory=dict)
    created: str | None = None
    holdout_n: int | None = None
    accuracy_interval: tuple[float, float] | None = None
    precision_rule: dict[str, Any] | None = None
    holdout_too_small: bool = False  # measured on fewer than service.holdout.min_labels holdout labels
    batch_split: dict[str, Any] | None = None  # the review batch after it: new items, second looks, holdout

    @property
    def measured(self) -> bool:
        """Whether the holdout figure counts (plotted, forecast): there is one, on enough holdout labels."""
        return self.holdout_accuracy is not None and not self.holdout_too_small

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "ReportPoint":
        """Read one point of ``GET /v1/report``; raise ``ValueError`` naming a missing member."""
        try:
            return cls(
                model_version=str(data["model_version"]),
                n_labels=int(data["n_labels"]),
                holdout_accuracy=_float_or_none(data.get("holdout_accuracy")),
                labels_per_class={str(k): int(v) for k, v in (data.get("labels_per_class") or {}).items()},
                coverage={str(k): _float_or_none(v) for k, v in (data.get("coverage") or {}).items()},
                selective_accuracy={str(k): _float_or_none(v) for k, v in (data.get("selective_accuracy") or {}).items()},
                created=None if data.get("created") is None else str(data["created"]),
                holdout_n=None if data.get("holdout_n") is None else int(data["holdout_n"]),
                accuracy_interval=None if data.get("accuracy_interval") is None else tuple(data["accuracy_interval"]),
                precision_rule=data.get("precision_rule"),
                holdout_too_small=bool(data.get("holdout_too_small", False)),
                batch_split=data.get("batch_split"),
            )
        except KeyError as exc:
            raise ValueError(f"report point lacks {exc.args[0]!r}: {dict(data)!r}") from exc

    @property
    def labels_per_class_mean(self) -> float | None:
        """Labels per class on average, or None when the per-class counts are unknown."""
        if not self.labels_per_class:
            return None
        return self.n_labels / len(self.labels_per_class)


def _float_or_none(value: Any) -> float | None:
    if value is None:
        return None
    number = float(value)
    return None if math.isnan(number) else number


def _points(points: Iterable[Mapping[str, Any] | ReportPoint]) -> list[ReportPoint]:
    return [p if isinstance(p, ReportPoint) else ReportPoint.from_json(p) for p in points]


def _thresholds(points: Sequence[ReportPoint]) -> list[str]:
    keys = {k for p in points for k in (*p.coverage, *p.selective_accuracy)}
    return sorted(keys, key=lambda k: (float(k) if _is_number(k) else math.inf, k))


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


# ---------------------------------------------------------------------------------------------- the points


def report_points(rows: Sequence[ModelVersion], min_holdout: int = 0, splits: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
    """One report point per model version (see ``GET /v1/report``).

    ``batch_split`` is how the review batch after that version was split (new items, second looks, holdout top-ups:
    :func:`learner.budget.split_batch`, recorded by the label checks; None where the version was not checked).

    ``holdout_n`` is the size of the holdout the figure was measured on (every stored version is re-measured
    when the holdout changes, so they compare like with like); below ``min_holdout`` labels the point says
    ``holdout_too_small`` and the plot and the forecast leave its figure out.
    """
    points = []
    for row in rows:
        metrics = row.metrics or {}
        thresholds = metrics.get("thresholds") or []
        n_holdout = metrics.get("n")
        points.append(
            {
                "model_version": row.version,
                "n_labels": row.n_labels,
                "labels_per_class": row.labels_per_class,
                "holdout_accuracy": metrics.get("accuracy"),
                "holdout_n": n_holdout,
                "holdout_too_small": n_holdout is not None and int(n_holdout) < min_holdout,
                "holdout_key": metrics.get("holdout_key"),
                "accuracy_interval": _accuracy_interval(metrics),
                "coverage": {f"{t['threshold']:g}": t["coverage"] for t in thresholds},
                "selective_accuracy": {f"{t['threshold']:g}": t["selective_accuracy"] for t in thresholds},
                "precision_rule": metrics.get("precision_rule"),
                "batch_split": (splits or {}).get(row.version),
                "created": row.created_at.isoformat() if isinstance(row.created_at, datetime) else row.created_at,
            }
        )
    return points


def _accuracy_interval(metrics: Mapping[str, Any]) -> list[float] | None:
    """The 95% Wilson interval of a version's holdout accuracy (recomputed for versions recorded before it was)."""
    from learner.metrics import wilson_interval

    if metrics.get("accuracy_interval") is not None:
        return list(metrics["accuracy_interval"])
    if metrics.get("accuracy") is None or not metrics.get("n"):
        return None
    return list(wilson_interval(metrics["accuracy"] * metrics["n"], int(metrics["n"])))


# ---------------------------------------------------------------------------------------------- the plot


def report_figure(
    points: Iterable[Mapping[str, Any] | ReportPoint], *, study_overlay: bool = True,
    forecast: Mapping[str, Any] | None = None,
) -> Figure:
    """The accuracy-versus-labels figure: points with 95% error bars, the forecast dashed with its band.

    A bare ``Figure`` rendered by the Agg canvas, never pyplot: no global state, safe in a threaded server.
    """
    pts = sorted(_points(points), key=lambda p: (p.n_labels, p.created or ""))
    fig = Figure(figsize=PNG_SIZE_IN, dpi=PNG_DPI, layout="constrained")
    ax = fig.add_subplot()
    ax.set_ylim(0, 1.02)
    ax.yaxis.set_major_formatter(PercentFormatter(1.0))
    ax.grid(True, which="both", alpha=0.3)
    ax.set_ylabel("on the holdout")
    fig.suptitle("juicer: holdout accuracy against labels")
    if not pts:
        ax.set_xscale("log")
        ax.set_xlim(0.8, 500)
        ax.set_xlabel("labels per class")
        ax.text(
            0.5, 0.55, "No model versions yet.\nAdd labels and retrain (POST /v1/retrain),\nor run `juicer simulate`.",
            ha="center", va="center", transform=ax.transAxes, fontsize=12, color="0.3",
        )
        if study_overlay:
            _plot_study(ax)
            ax.legend(loc="lower right", fontsize=8)
        return fig

    n_classes = max(len(p.labels_per_class) for p in pts)
    per_class = n_classes > 0
    xs = [p.n_labels / n_classes if per_class else p.n_labels for p in pts]
    ax.set_xscale("log")
    ax.set_xlabel("labels per class (mean)" if per_class else "labels")
    if per_class:
        top = ax.secondary_xaxis("top", functions=(lambda x: x * n_classes, lambda n: n / n_classes))
        top.set_xlabel(f"labels ({n_classes} classes)")
        top.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))

    acc = [(x, p) for x, p in zip(xs, pts) if p.measured]
    if acc:
        ax_x = [x for x, _ in acc]
        ax_y = [p.holdout_accuracy for _, p in acc]
        below = [p.holdout_accuracy - p.accuracy_interval[0] if p.accuracy_interval else 0 for _, p in acc]
        above = [p.accuracy_interval[1] - p.holdout_accuracy if p.accuracy_interval else 0 for _, p in acc]
        ax.errorbar(ax_x, ax_y, yerr=[below, above], fmt="o-", color="tab:blue", capsize=3,
                    label="holdout accuracy (argmax), 95% interval")
    curve = (forecast or {}).get("curve")
    if curve:
        scale = n_classes if per_class else 1
        fx = [n / scale for n in curve["n_labels"]]
        ax.fill_between(fx, curve["low"], curve["high"], color="tab:purple", alpha=0.15, linewidth=0)
        ax.plot(fx, curve["expected"], "--", color="tab:purple", label="forecast, 80% band (to the refusal limit)")
        xs = [*xs, fx[-1]]
    selective = [(x, p.selective_accuracy.get(PLOT_THRESHOLD)) for x, p in zip(xs, pts)]
    selective = [(x, y) for x, y in selective if y is not None]
    if selective:
        ax.plot(*zip(*selective), "s--", color="tab:green", label=f"accuracy on accepted, p > {PLOT_THRESHOLD}")
    coverage = [(x, p.coverage.get(PLOT_THRESHOLD)) for x, p in zip(xs, pts)]
    coverage = [(x, y) for x, y in coverage if y is not None]
    if coverage:
        ax.plot(*zip(*coverage), "^:", color="tab:orange", alpha=0.8, label=f"coverage (share accepted), p > {PLOT_THRESHOLD}")

    lo, hi = min(xs), max(xs)
    if study_overlay:
        if per_class:
            _plot_study(ax)
            lo, hi = min(lo, STUDY_POINTS[0].labels_per_class), max(hi, STUDY_POINTS[-1].labels_per_class)
        else:
            study = ", ".join(f"{point.budget} {point.accuracy:.0%}" for point in STUDY_POINTS)
            ax.text(0.01, 0.98, f"{STUDY_LABEL}: {study}", transform=ax.transAxes, fontsize=7, color="0.3", va="top")
    ax.set_xlim(lo / 1.5, hi * 1.5)
    _plain_log_ticks(ax, lo, hi)
    ax.legend(loc="lower right", fontsize=8)
    return fig


def _plain_log_ticks(ax: Any, lo: float, hi: float) -> None:
    """Tick labels as plain numbers (30, not 3x10^1); label the minor ticks too when the range is short."""
    plain = FuncFormatter(lambda value, _: f"{value:g}")
    ax.xaxis.set_major_formatter(plain)
    ax.xaxis.set_minor_formatter(plain if hi / lo < 30 else NullFormatter())


def _plot_study(ax: Any) -> None:
    xs = [point.labels_per_class for point in STUDY_POINTS]
    ys = [point.accuracy for point in STUDY_POINTS]
    spread = [[y - point.accuracy_low for y, point in zip(ys, STUDY_POINTS)],
              [point.accuracy_high - y for y, point in zip(ys, STUDY_POINTS)]]
    ax.errorbar(xs, ys, yerr=spread, fmt="x", color="black", markersize=8, capsize=3, label=STUDY_LABEL)
    for name, x, y in zip((point.budget for point in STUDY_POINTS), xs, ys):
        ax.annotate(name, (x, y), textcoords="offset points", xytext=(5, -12), fontsize=8, color="0.2")


def report_png(
    points: Iterable[Mapping[str, Any] | ReportPoint], *, study_overlay: bool = True,
    forecast: Mapping[str, Any] | None = None,
) -> bytes:
    """The accuracy-versus-labels plot as PNG bytes (800x500 pixels)."""
    fig = report_figure(points, study_overlay=study_overlay, forecast=forecast)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=PNG_DPI)
    return buffer.getvalue()


# ---------------------------------------------------------------------------------------------- the table


def _rows(pts: Sequence[ReportPoint], thresholds: Sequence[str]) -> tuple[list[str], list[list[str]]]:
    header = ["model version", "created", "labels", "labels/class", "holdout n", "holdout acc", "95% interval"]
    for t in thresholds:
        header += [f"coverage@{t}", f"sel. acc@{t}"]
    rows = []
    for p in pts:
        counts = list(p.labels_per_class.values())
        per_class = f"{min(counts)}-{max(counts)}" if counts and min(counts) != max(counts) else (str(counts[0]) if counts else "-")
        interval = f"{_percent(p.accuracy_interval[0])}-{_percent(p.accuracy_interval[1])}" if p.accuracy_interval else "-"
        accuracy = TOO_SMALL if p.holdout_too_small else _percent(p.holdout_accuracy)
        interval = "-" if p.holdout_too_small else interval
        holdout_n = "-" if p.holdout_n is None else str(p.holdout_n)
        row = [p.model_version, p.created or "-", str(p.n_labels), per_class, holdout_n, accuracy, interval]
        for t in thresholds:
            row += [_percent(p.coverage.get(t)), _percent(p.selective_accuracy.get(t))]
        rows.append(row)
    return header, rows


def report_table(points: Iterable[Mapping[str, Any] | ReportPoint]) -> str:
    """A plain-text table, one row per model version, for terminals."""
    pts = _points(points)
    if not pts:
        return "no model versions yet: add labels and retrain (POST /v1/retrain), or run `juicer simulate`\n"
    header, rows = _rows(pts, _thresholds(pts))
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    numeric = [i >= 2 for i in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(c.rjust(w) if num else c.ljust(w) for c, w, num in zip(cells, widths, numeric)).rstrip()

    return "\n".join([line(header), line(["-" * w for w in widths]), *(line(r) for r in rows)]) + "\n"


# ---------------------------------------------------------------------------------------------- the page


@functools.lru_cache(maxsize=1)
def templates() -> Any:
    """The Jinja2 environment over ``app/http/templates`` (autoescaped), usable with or without a Flask app."""
    from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

    environment = Environment(loader=PackageLoader("app.http", "templates"), autoescape=select_autoescape(),
                              undefined=StrictUndefined)
    environment.globals.update(pct=_pct, pts=_pts, count=_count)
    return environment


def _pct(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{100 * value:.{digits}f}%"


def _pts(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.2f}"


def _count(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


def serving_view(row: ModelVersion | None) -> dict[str, Any] | None:
    """Per-class accuracy and the confusion matrix of one model version, shaped for the report page."""
    metrics = (row.metrics if row is not None else None) or {}
    if not metrics.get("confusion"):
        return None
    classes = [str(c) for c in metrics["classes"]]
    confusion = metrics["confusion"]
    largest = max((max(r) for r in confusion), default=1) or 1
    return {
        "version": row.version,
        "classes": classes,
        "per_class": [(name, metrics["per_class_accuracy"].get(name)) for name in classes],
        "confusion": [(name, [{"count": c, "shade": round(0.6 * c / largest, 3), "diagonal": i == j}
                              for j, c in enumerate(r)])
                      for i, (name, r) in enumerate(zip(classes, confusion))],
    }


def label_checks_view(store: Any, limit: int = 20) -> dict[str, Any] | None:
    """The newest label check for the report: counts, annotators' agreement and estimated quality (CROWDLAB), the
    most suspect training and holdout labels, the second looks by status, the holdout labels asked again (and how many
changed); None before the first check."""
    from app.core.checks import SUMMARY_KEY, holdout_second_look_summary

    summary = store.get_meta(SUMMARY_KEY)
    if not summary:
        return None
    version = summary.get("version")
    suspects = [{"item_id": c.item_id, "label": c.label, "suggested": c.suggested, "score": c.score}
                for c in store.label_checks(version, split="training", suspect=True, limit=limit)]
    holdout = [{"item_id": c.item_id, "label": c.label, "suggested": c.suggested, "score": c.score}
               for c in store.label_checks(version, split="holdout", suspect=True, limit=limit)]
    return {**summary, "suspects": suspects, "holdout_suspects": holdout, "second_look_status": store.second_look_counts(),
            "holdout_second_looks": holdout_second_look_summary(store)}


def report_html(
    points: Iterable[Mapping[str, Any] | ReportPoint], *, title: str = "juicer report",
    forecast: Mapping[str, Any] | None = None, serving: ModelVersion | None = None, notes: Sequence[str] = (),
    checks: Mapping[str, Any] | None = None,
) -> str:
    """The report page (``app/http/templates/report.html``): forecast in words, plot, per-class figures, tables.

    ``serving`` is the serving model version (its per-class accuracy and confusion matrix); ``notes`` are lines shown
    under the title (where the holdout of a connected project goes, or why it cannot); ``checks`` the newest
    label check (:func:`label_checks_view`).
    One self-contained page: the plot is embedded as a data URI; no JavaScript.
    """
    pts = sorted(_points(points), key=lambda p: (p.n_labels, p.created or ""))
    header, rows = _rows(pts, _thresholds(pts))
    png = base64.b64encode(report_png(pts, forecast=forecast)).decode("ascii")
    return templates().get_template("report.html").render(
        title=title, points=pts, forecast=forecast, png=png, header=header, rows=rows,
        serving=serving_view(serving), study_label=STUDY_LABEL, notes=list(notes), checks=checks,
    )


# ---------------------------------------------------------------------------------------------- the forecast


def forecast_points(points: Iterable[Mapping[str, Any] | ReportPoint]) -> list[Any]:
    """:class:`learner.forecast.Point` per distinct label count (the newest version at each count wins)."""
    from learner.forecast import Point

    by_n: dict[int, Any] = {}
    for p in sorted(_points(points), key=lambda p: p.created or ""):
        if p.measured and p.holdout_n and p.n_labels > 0:
            by_n[p.n_labels] = Point(p.n_labels, p.holdout_accuracy, p.holdout_n)
    return [by_n[n] for n in sorted(by_n)]


def forecast_document(
    points: Iterable[Mapping[str, Any] | ReportPoint],
    *,
    targets: Sequence[float] = (0.8, 0.9, 0.95),
    max_multiple: float = 4.0,
    backtest_tolerance: float = 0.03,
    n_curve: int = 40,
) -> dict[str, Any]:
    """``GET /v1/forecast``: the fitted curve, its band up to the limit, backtest, refusals, labels to ``targets``.

    ``curve`` holds the dashed line and its band for plotting (``n_labels`` log-spaced from the smallest
    measured n to the refusal limit); ``next`` says what the next labels buy, in numbers and in words.
    """
    pts = forecast_points(points)
    key = (tuple((p.n_labels, p.accuracy, p.n_holdout) for p in pts), tuple(targets), max_multiple, backtest_tolerance, n_curve)
    return _forecast_cached(key)


@functools.lru_cache(maxsize=32)
def _forecast_cached(key: tuple) -> dict[str, Any]:
    from learner.forecast import Point, fit_forecast

    raw_points, targets, max_multiple, backtest_tolerance, n_curve = key
    pts = [Point(n, a, h) for n, a, h in raw_points]
    forecast = fit_forecast(pts, max_multiple=max_multiple, backtest_tolerance=backtest_tolerance)
    document = forecast.to_dict(targets=targets)
    document["curve"] = None
    document["next"] = []
    if forecast.refused is None:
        grid = np.geomspace(min(p.n_labels for p in pts), forecast.limit_n, n_curve)
        expected, low, high = forecast.expected_curve(grid)
        document["curve"] = {"n_labels": grid.tolist(), "expected": expected.tolist(), "low": low.tolist(),
                             "high": high.tolist()}
        for more in sorted({100, forecast.n_max, int(forecast.limit_n - forecast.n_max)}):
            prediction = forecast.predict(forecast.n_max + more)
            if prediction.expected is None:
                continue
            document["next"].append({
                "more_labels": more, **prediction.to_dict(),
                "words": f"{more:,} more labels -> expected {prediction.expected:.1%} "
                         f"({prediction.low:.1%}-{prediction.high:.1%})",
            })
    return document

