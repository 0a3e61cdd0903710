"""Accuracy-versus-labels reports from the points of ``GET /v1/report``: a PNG, an HTML page, a text table.

A point is one model version, as the JSON API gives it::

    {"model_version": "v3", "n_labels": 40, "labels_per_class": {"shirt": 4, ...},
     "holdout_accuracy": 0.71, "coverage": {"0.5": 0.93, "0.8": 0.55},
     "selective_accuracy": {"0.5": 0.74, "0.8": 0.92}, "created": "2026-11-28T21:40:00+00:00"}

Pure functions of the points (no store, no Flask), so the views, the CLI and the tests share them.
"""

from __future__ import annotations

import base64
import html
import io
import math
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Iterable, Mapping, Sequence

from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, NullFormatter, PercentFormatter

from learner.study import STUDY_LABEL, STUDY_POINTS

PNG_SIZE_IN = (8.0, 5.0)
PNG_DPI = 100
PLOT_THRESHOLD = "0.8"


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


def report_points(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One report point per model version (see ``GET /v1/report``)."""
    points = []
    for row in rows:
        metrics = row.get("metrics") or {}
        thresholds = metrics.get("thresholds") or []
        points.append(
            {
                "model_version": row["version"],
                "n_labels": row["n_labels"],
                "labels_per_class": row["labels_per_class"],
                "holdout_accuracy": metrics.get("accuracy"),
                "coverage": {f"{t['threshold']:g}": t["coverage"] for t in thresholds},
                "selective_accuracy": {f"{t['threshold']:g}": t["selective_accuracy"] for t in thresholds},
                "created": row["created_at"].isoformat() if isinstance(row["created_at"], datetime) else row["created_at"],
            }
        )
    return points


# ---------------------------------------------------------------------------------------------- the plot


def report_figure(points: Iterable[Mapping[str, Any] | ReportPoint], *, study_overlay: bool = True) -> Figure:
    """The accuracy-versus-labels figure.

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

    acc = [(x, p.holdout_accuracy) for x, p in zip(xs, pts) if p.holdout_accuracy is not None]
    if acc:
        ax.plot(*zip(*acc), "o-", color="tab:blue", label="holdout accuracy (argmax)")
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


def report_png(points: Iterable[Mapping[str, Any] | ReportPoint], *, study_overlay: bool = True) -> bytes:
    """The accuracy-versus-labels plot as PNG bytes (800x500 pixels)."""
    fig = report_figure(points, study_overlay=study_overlay)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=PNG_DPI)
    return buffer.getvalue()


# ---------------------------------------------------------------------------------------------- the table


def _rows(pts: Sequence[ReportPoint], thresholds: Sequence[str]) -> tuple[list[str], list[list[str]]]:
    header = ["model version", "created", "labels", "labels/class", "holdout acc"]
    for t in thresholds:
        header += [f"coverage@{t}", f"sel. acc@{t}"]
    rows = []
    for p in pts:
        counts = list(p.labels_per_class.values())
        per_class = f"{min(counts)}-{max(counts)}" if counts and min(counts) != max(counts) else (str(counts[0]) if counts else "-")
        row = [p.model_version, p.created or "-", str(p.n_labels), per_class, _percent(p.holdout_accuracy)]
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

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 60rem; color: #222; padding: 0 1rem; }
table { border-collapse: collapse; font-size: 0.9rem; margin-top: 1rem; }
th, td { border-bottom: 1px solid #ddd; padding: 0.3rem 0.6rem; text-align: right; white-space: nowrap; }
.scroll { overflow-x: auto; }
th:first-child, td:first-child, th:nth-child(2), td:nth-child(2) { text-align: left; }
img { max-width: 100%; height: auto; }
.note { color: #555; font-size: 0.9rem; }
"""


def report_html(points: Iterable[Mapping[str, Any] | ReportPoint], *, title: str = "juicer report") -> str:
    """One self-contained HTML page (plot embedded as a data URI, no JavaScript): the plot and the table."""
    pts = _points(points)
    png = base64.b64encode(report_png(pts)).decode("ascii")
    esc = html.escape
    parts = [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{esc(title)}</title><style>{_STYLE}</style></head><body>",
        f"<h1>{esc(title)}</h1>",
        f'<img src="data:image/png;base64,{png}" alt="holdout accuracy against the number of labels" '
        'width="800" height="500">',
    ]
    if not pts:
        parts.append(
            "<p><strong>No model versions yet.</strong> The first version appears after the first retrain: add "
            "labels (<code>POST /v1/labels</code>, or annotate in Label Studio), then <code>POST /v1/retrain</code>; "
            "or watch the loop with <code>juicer simulate --labels 100 --order uncertainty</code>.</p>"
        )
    else:
        header, rows = _rows(pts, _thresholds(pts))
        parts.append('<div class="scroll"><table><thead><tr>' + "".join(f"<th>{esc(h)}</th>" for h in header) + "</tr></thead><tbody>")
        for p, row in zip(pts, rows):
            per_class = ", ".join(f"{k}: {v}" for k, v in p.labels_per_class.items())
            cells = [f"<td>{esc(c)}</td>" for c in row]
            cells[3] = f'<td title="{esc(per_class, quote=True)}">{esc(row[3])}</td>'
            parts.append("<tr>" + "".join(cells) + "</tr>")
        parts.append("</tbody></table></div>")
        parts.append(
            '<p class="note">Coverage@t: share of holdout images whose top probability exceeds t (accepted without '
            "review); sel. acc@t: accuracy on those. Crosses: "
            f"{esc(STUDY_LABEL)}, placed at labels per class. Machine-readable: <a href=\"/v1/report\">/v1/report</a>.</p>"
        )
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"
