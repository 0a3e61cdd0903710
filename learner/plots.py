"""The data-size curve as a picture: holdout accuracy against labels per class (log x), with the origin
study's reported points overlaid. A bare ``Figure`` on the Agg canvas, never pyplot: no display needed, and a
notebook's own backend is left alone."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Mapping

from matplotlib.figure import Figure

from learner.study import STUDY_LABEL, STUDY_X_NOTE

logger = logging.getLogger(__name__)

_LABELLED = {"1/class", "3/class", "5%", "10%", "50%", "100%"}  # budgets named on the plot (as the study's)


def plot_curve(curve: Mapping[str, Any], path: str | Path) -> Path:
    """Draw ``curve`` (a ``curve.json`` document) into a PNG at ``path``; returns the path."""
    path = Path(path)
    # Sorted by labels: on a small dataset "5%" can be fewer labels than "3/class".
    budgets = sorted(curve["budgets"], key=lambda b: b["labels_per_class"])
    x = [b["labels_per_class"] for b in budgets]
    mean = [100 * b["accuracy_mean"] for b in budgets]
    low = [100 * b["accuracy_min"] for b in budgets]
    high = [100 * b["accuracy_max"] for b in budgets]
    n_seeds = len(curve.get("seeds", [])) or 1

    fig = Figure(figsize=(8, 5), dpi=120)
    ax = fig.add_subplot()
    head = (curve.get("head") or {}).get("class", "softmax head")
    label = f"juicer: {curve.get('backbone', '?')} + {head} (mean of {n_seeds} seed(s))"
    ax.plot(x, mean, "o-", color="tab:blue", label=label)
    if n_seeds > 1:
        ax.fill_between(x, low, high, color="tab:blue", alpha=0.2, label="min-max over seeds")
    for b, xi, yi in zip(budgets, x, mean):
        if b["budget"] in _LABELLED:  # the dense 20%..90% run would overprint itself
            ax.annotate(b["budget"], (xi, yi), textcoords="offset points", xytext=(5, -13), ha="left",
                        fontsize=7, color="tab:blue")

    supervised = (curve.get("supervised") or {}).get("budgets")
    if supervised:  # the plain head on the same picks, beside the default one
        plain = sorted(supervised, key=lambda b: b["labels_per_class"])
        ax.plot([b["labels_per_class"] for b in plain], [100 * b["accuracy_mean"] for b in plain], "o--",
                color="tab:grey", markersize=3, label="plain SoftmaxHead, same picks")
    forecast = curve.get("forecast") or {}
    n_classes = curve.get("n_classes") or len(curve.get("class_names", [])) or 1
    predicted = [b for b in (forecast.get("budgets") or {}).values() if b.get("predicted") is not None]
    if predicted:
        fx = [b["n_labels"] / n_classes for b in predicted]
        fy = [100 * b["predicted"] for b in predicted]
        spread = [[y - 100 * b["low"] for y, b in zip(fy, predicted)], [100 * b["high"] - y for y, b in zip(fy, predicted)]]
        fitted = ", ".join(forecast.get("fitted_on", []))
        ax.errorbar(fx, fy, yerr=spread, fmt="D--", color="tab:purple", capsize=3, markersize=4,
                    label=f"forecast from {fitted} (80% band)")

    study = curve.get("study") or []
    if study:
        sx = [p["labels_per_class"] for p in study]
        sy = [100 * (p["accuracy_low"] + p["accuracy_high"]) / 2 for p in study]
        err_low = [y - 100 * p["accuracy_low"] for y, p in zip(sy, study)]
        err_high = [100 * p["accuracy_high"] - y for y, p in zip(sy, study)]
        ax.errorbar(sx, sy, yerr=[err_low, err_high], fmt="s", color="tab:orange", capsize=4,
                    label=STUDY_LABEL)
        for p, xi, yi in zip(study, sx, sy):
            ax.annotate(p["budget"], (xi, yi), textcoords="offset points", xytext=(-5, 7), ha="right",
                        fontsize=7, color="tab:orange")

    ax.set_xscale("log")
    ax.set_xlabel("labelled images per class (log scale)")
    ax.set_ylabel("holdout accuracy (%)")
    ax.set_ylim(0, 100)
    ax.grid(True, which="both", alpha=0.3)
    ax.set_title(f"Accuracy vs labels: {curve.get('dataset', '?')}, {curve.get('n_images', '?')} images")
    ax.legend(loc="lower right", fontsize=8)
    fig.text(0.01, 0.01, STUDY_X_NOTE, fontsize=6, color="grey")
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    logger.debug("wrote %s", path)
    return path


def plot_simulation(document: Mapping[str, Any], path: str | Path) -> Path:
    """Draw ``simulate.json`` (accuracy against labels, a line and a p10-p90 band per strategy) into a PNG."""
    path = Path(path)
    fig = Figure(figsize=(8, 5), dpi=120)
    ax = fig.add_subplot()
    for name, entry in document["strategies"].items():
        x = entry["n_labels"]
        line, = ax.plot(x, [100 * a for a in entry["accuracy_mean"]], "-", label=name,
                        linewidth=2.0 if name == "auto" else 1.2)
        ax.fill_between(x, [100 * a for a in entry["accuracy_p10"]], [100 * a for a in entry["accuracy_p90"]],
                        color=line.get_color(), alpha=0.15)
    full = document.get("full_data_accuracy")
    if full:
        ax.axhline(100 * full, color="grey", linestyle=":", label=f"all labels ({100 * full:.1f}%)")
    ax.set_xlabel("labels")
    ax.set_ylabel("holdout accuracy (%)")
    ax.grid(True, alpha=0.3)
    ax.set_title(f"Active learning offline: mean and 10-90th percentile over {document.get('seeds', '?')} seed(s)")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path
