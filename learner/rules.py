"""Decision rules: pure functions that say, per prediction, whether to accept it or send it for review.

Each rule takes a probability array ``proba`` (n, n_classes), rows summing to one, and returns a boolean
"accept" mask plus a human reason per row. :func:`decide` wraps them into :class:`Decision` records::

    decide(proba, "threshold", threshold=0.8)
    -> [Decision(decision="accept", rule="threshold", reason="max probability 0.93 >= 0.80"), ...]

Rules (names for :func:`decide`):

- ``argmax``: always accept the most probable class.
- ``threshold``: accept when the max probability is at least ``threshold`` (the origin study used 0.5 and
  0.8).
- ``margin``: accept when top-1 minus top-2 probability is at least ``min_margin``.
- ``entropy``: accept when the entropy of the row (in nats) is at most ``max_entropy``.
- ``precision``: accept when the max probability (after ``temperature`` scaling) is at least the
  ``threshold`` chosen for this model version by :func:`learner.selective.calibrate_precision_rule`, so that
  the accepted predictions keep ``target_precision`` on the holdout; ``threshold=None`` (no threshold keeps
  the promise) sends everything to review.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Literal, Sequence

import numpy as np

ACCEPT: Literal["accept"] = "accept"
REVIEW: Literal["review"] = "review"

DEFAULT_THRESHOLD = 0.8
DEFAULT_MIN_MARGIN = 0.2
DEFAULT_MAX_ENTROPY = 0.5


@dataclass(frozen=True)
class Decision:
    """What to do with one prediction, and why."""

    decision: Literal["accept", "review"]
    rule: str
    reason: str


def _check_proba(proba: np.ndarray) -> np.ndarray:
    proba = np.asarray(proba, dtype=np.float64)
    if proba.ndim != 2 or proba.shape[1] < 1:
        raise ValueError(f"proba must be a 2-d array (n, n_classes), got shape {proba.shape}")
    if proba.size and (not np.all(np.isfinite(proba)) or proba.min() < 0):
        raise ValueError("proba must hold finite non-negative probabilities")
    return proba


def max_probability(proba: np.ndarray) -> np.ndarray:
    """The largest probability of each row, (n,)."""
    return _check_proba(proba).max(axis=1, initial=0.0)


def margin(proba: np.ndarray) -> np.ndarray:
    """Top-1 minus top-2 probability of each row, (n,); 1.0 for a single class."""
    proba = _check_proba(proba)
    if proba.shape[1] == 1:
        return np.ones(proba.shape[0])
    top2 = np.sort(proba, axis=1)[:, -2:]
    return top2[:, 1] - top2[:, 0]


def entropy(proba: np.ndarray) -> np.ndarray:
    """Shannon entropy of each row in nats, (n,); 0 log 0 counts as 0."""
    proba = _check_proba(proba)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(proba > 0, proba * np.log(proba), 0.0)
    return -terms.sum(axis=1)


def argmax_rule(proba: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """Accept every prediction (the plain argmax classifier)."""
    top = max_probability(proba)
    return np.ones(len(top), dtype=bool), [f"argmax: always accepted (max probability {p:.2f})" for p in top]


def threshold_rule(proba: np.ndarray, threshold: float = DEFAULT_THRESHOLD) -> tuple[np.ndarray, list[str]]:
    """Accept when the max probability is at least ``threshold``."""
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold must be within [0, 1], got {threshold}")
    top = max_probability(proba)
    accept = top >= threshold
    reasons = [
        f"max probability {p:.2f} {'>=' if ok else '<'} threshold {threshold:.2f}" for p, ok in zip(top, accept)
    ]
    return accept, reasons


def margin_rule(proba: np.ndarray, min_margin: float = DEFAULT_MIN_MARGIN) -> tuple[np.ndarray, list[str]]:
    """Accept when top-1 minus top-2 probability is at least ``min_margin``."""
    if not 0.0 <= min_margin <= 1.0:
        raise ValueError(f"min_margin must be within [0, 1], got {min_margin}")
    margins = margin(proba)
    accept = margins >= min_margin
    reasons = [
        f"margin top1-top2 {m:.2f} {'>=' if ok else '<'} minimum {min_margin:.2f}" for m, ok in zip(margins, accept)
    ]
    return accept, reasons


def entropy_rule(proba: np.ndarray, max_entropy: float = DEFAULT_MAX_ENTROPY) -> tuple[np.ndarray, list[str]]:
    """Accept when the entropy (nats) is at most ``max_entropy``."""
    if max_entropy < 0:
        raise ValueError(f"max_entropy must be >= 0, got {max_entropy}")
    entropies = entropy(proba)
    accept = entropies <= max_entropy
    reasons = [
        f"entropy {h:.2f} nats {'<=' if ok else '>'} maximum {max_entropy:.2f}" for h, ok in zip(entropies, accept)
    ]
    return accept, reasons


def precision_rule(
    proba: np.ndarray, threshold: float | None, temperature: float = 1.0, target_precision: float | None = None
) -> tuple[np.ndarray, list[str]]:
    """Accept when the (temperature-scaled) max probability reaches the version's promised threshold."""
    from learner.selective import temperature_scale

    promise = f" (keeps {target_precision:.0%} precision on the holdout)" if target_precision is not None else ""
    if threshold is None:
        proba = _check_proba(proba)
        reason = "no threshold keeps the promised precision for this model version: everything goes to review"
        return np.zeros(proba.shape[0], dtype=bool), [reason] * proba.shape[0]
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold must be within [0, 1], got {threshold}")
    top = max_probability(temperature_scale(_check_proba(proba), temperature))
    accept = top >= threshold
    reasons = [
        f"max probability {p:.3f} {'>=' if ok else '<'} threshold {threshold:.3f}{promise}" for p, ok in zip(top, accept)
    ]
    return accept, reasons


RULES: dict[str, Callable[..., tuple[np.ndarray, list[str]]]] = {
    "argmax": argmax_rule,
    "threshold": threshold_rule,
    "margin": margin_rule,
    "entropy": entropy_rule,
    "precision": precision_rule,
}


#: The keyword each rule's one setting goes by in :func:`decide` (``argmax`` has none).
RULE_PARAMETER: dict[str, str] = {"threshold": "threshold", "margin": "min_margin", "entropy": "max_entropy"}


def rule_params(rule: str, value: float) -> dict[str, float]:
    """The keyword arguments :func:`decide` takes for ``rule`` set to ``value`` (the service's decision_threshold)."""
    name = RULE_PARAMETER.get(rule)
    return {name: value} if name else {}


def decide(proba: np.ndarray, rule: str = "threshold", **params: float | None) -> list[Decision]:
    """Apply the named rule (``argmax``, ``threshold``, ``margin``, ``entropy``, ``precision``) to every row."""
    try:
        function = RULES[rule]
    except KeyError:
        raise ValueError(f"unknown decision rule {rule!r}; choose one of {', '.join(RULES)}") from None
    try:
        accept, reasons = function(proba, **params)
    except TypeError as exc:
        raise ValueError(f"bad parameters {sorted(params)} for rule {rule!r}: {exc}") from exc
    return [Decision(ACCEPT if ok else REVIEW, rule, reason) for ok, reason in zip(accept, reasons)]


def proba_in_order(
    head: Any, X: np.ndarray, classes: Sequence[Any], predict_proba: Callable[[Any], np.ndarray] | None = None
) -> np.ndarray:
    """``head.predict_proba(X)`` with its columns in ``classes`` order; a class the head never saw gets 0.

    ``predict_proba``: the head's own, or one giving the same numbers faster (``SoftmaxHead.serving_proba``).
    Raises ``ValueError`` if the head knows a class that ``classes`` does not.
    """
    proba = np.asarray((predict_proba or head.predict_proba)(X), dtype=np.float64)
    known = list(head.classes_)
    if known == list(classes):
        return proba
    index = {name: j for j, name in enumerate(classes)}
    unknown = [name for name in known if name not in index]
    if unknown:
        raise ValueError(f"the head predicts classes {unknown} that are not among {list(classes)}")
    full = np.zeros((proba.shape[0], len(classes)), dtype=np.float64)
    full[:, [index[name] for name in known]] = proba
    return full
