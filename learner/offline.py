"""The active-learning loop on embeddings, with the ground truth as the annotator: no Label Studio, no service.

For each seed ``s``: 10% of every class is held out (:func:`learner.curve.holdout_split`, seed ``s``), and
``start_per_class`` labels of every class are drawn at random from the rest (0: start from nothing). Every
strategy then starts from *the same* holdout and start labels; each round fits a fresh head on the labels
(plus, for a head that takes them, the unlabelled pool rows marked ``-1``; the holdout never), scores the
holdout, and asks the strategy for the next ``batch`` pool rows, whose true labels are then revealed.
``random`` is always run beside the others (active-learning gains over random are often small).
With ``sampled=True`` every strategy but ``random`` draws its batches from a proposal over its order
(:func:`learner.query.sampled_query`, the picks :mod:`learner.estimate` can weigh) instead of taking its top k.

With noisy annotators (:class:`Annotators`, issue 20) every answer, the holdout's included, comes from a
:class:`learner.noise.NoisyAnnotator` and accuracy is still measured against the true labels. With ``checks``
each round also computes out-of-fold probabilities (:func:`learner.oof.out_of_fold_proba`, supervised, on the
labels only) and cleanlab's suspects (:func:`learner.label_issues.find_suspects`); :func:`learner.budget.split_batch`
splits the next batch between new picks and second looks at suspects (another annotator, no guess shown, one
label each from the same budget), and CROWDLAB's consensus settles an item with two answers. Suspected holdout
labels are asked again the same way (counted apart: the offline holdout is given, not bought from the budget).
``Annotators.rank`` orders the suspects for second looks (ActiveLab's scores or cleanlab's self-confidence) and
``Annotators.leave_out`` keeps the most suspect share of the suspects not yet settled by a second look out of
the round's fit (clean learning, cleanlab's ``CleanLearning`` idea: the suspects are computed before the fit).

:func:`run_offline` returns an :class:`OfflineResult`; :meth:`OfflineResult.to_dict` is ``simulate.json``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from learner.budget import (
    DEFAULT_LOOKS_FROM_PER_CLASS,
    DEFAULT_MAX_SELF_CONFIDENCE,
    DEFAULT_MIN_TOP_CONFIDENCE,
    DEFAULT_RANK,
    RANKS,
    second_looks_open,
)
from learner.curve import Budget, budget_picks, holdout_split
from learner.query import STRATEGIES, query, sampled_query
from learner.rules import proba_in_order

logger = logging.getLogger(__name__)


@dataclass
class StrategyCurve:
    """One strategy's accuracy after every round, per seed (rows) and label count (columns)."""

    n_labels: list[int]
    accuracies: list[list[float]]  # [seed][round]
    rounds: list[list[dict[str, Any]]] = field(default_factory=list)  # [seed][round] with noisy annotators

    def summary(self, full_data_accuracy: float) -> dict[str, Any]:
        """The ``simulate.json`` entry: means, 10th/90th percentiles and labels needed to reach targets."""
        acc = np.asarray(self.accuracies, dtype=np.float64)
        mean = acc.mean(axis=0)
        checks = {"rounds": self.rounds} if self.rounds else {}  # noisy annotators: per seed, per round
        return {
            **checks,
            "n_labels": list(self.n_labels),
            "accuracy_mean": mean.tolist(),
            "accuracy_p10": np.percentile(acc, 10, axis=0).tolist(),
            "accuracy_p90": np.percentile(acc, 90, axis=0).tolist(),
            "accuracy_per_seed": acc.tolist(),  # [seed][round], seeds in settings.seed_list order (paired comparisons)
            "labels_to_reach": {
                "0.85": _first_reaching(self.n_labels, mean, 0.85),
                "0.98_of_full": _first_reaching(self.n_labels, mean, 0.98 * full_data_accuracy),
            },
        }


def _first_reaching(n_labels: Sequence[int], mean: np.ndarray, target: float) -> int | None:
    reached = np.flatnonzero(mean >= target)
    return int(n_labels[reached[0]]) if len(reached) else None


@dataclass
class OfflineResult:
    """Every strategy's curve over the same seeds; ``to_dict()`` is the ``simulate.json`` document."""

    strategies: dict[str, StrategyCurve]
    full_data_accuracy: float
    seeds: int
    settings: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "strategies": {name: curve.summary(self.full_data_accuracy) for name, curve in self.strategies.items()},
            "full_data_accuracy": self.full_data_accuracy,
            "seeds": self.seeds,
            "settings": dict(self.settings),
        }

    def table(self, checkpoints: Sequence[int] = (20, 50, 100, 300)) -> str:
        """Accuracy at the checkpoints (the round at or just below each) and labels to 85% / 98% of full."""
        document = self.to_dict()
        first = next(iter(self.strategies.values()))
        shown = [c for c in checkpoints if first.n_labels and first.n_labels[0] <= c <= first.n_labels[-1]]
        if not shown and first.n_labels:  # a short run: its last round
            shown = [first.n_labels[-1]]
        header = f"{'strategy':>18} " + " ".join(f"{f'@{c}':>7}" for c in shown) + f" {'to 85%':>8} {'to 98% full':>12}"
        lines = [header]
        for name, entry in document["strategies"].items():
            row = f"{name:>18} "
            for c in shown:
                j = int(np.searchsorted(entry["n_labels"], c, side="right")) - 1
                row += f"{entry['accuracy_mean'][j]:>7.1%} "
            reach = entry["labels_to_reach"]
            row += f"{_or_dash(reach['0.85']):>8} {_or_dash(reach['0.98_of_full']):>12}"
            lines.append(row)
        lines.append(f"full-data accuracy {self.full_data_accuracy:.1%} (mean of {self.seeds} seed(s))")
        return "\n".join(lines)


def _or_dash(value: int | None) -> str:
    return "-" if value is None else str(value)


def _fit_and_score(
    make_head: Callable[[int], Any], seed: int, embeddings: np.ndarray, labels: np.ndarray, labelled: np.ndarray,
    unlabelled: np.ndarray, holdout: np.ndarray, classes: np.ndarray, semi_supervised: bool,
    truth: np.ndarray | None = None,
) -> tuple[Any, float]:
    """A head fitted on ``labels`` of the labelled rows, and its holdout accuracy against ``truth`` (default ``labels``)."""
    truth = labels if truth is None else truth
    head = make_head(seed)
    if semi_supervised and len(unlabelled):
        X = np.concatenate([embeddings[labelled], embeddings[unlabelled]])
        y = np.concatenate([labels[labelled], np.full(len(unlabelled), -1, dtype=labels.dtype)])
    else:
        X, y = embeddings[labelled], labels[labelled]
    head.fit(X, y)
    proba = proba_in_order(head, embeddings[holdout], classes)
    return head, float(np.mean(classes[np.argmax(proba, axis=1)] == truth[holdout]))


def run_offline(
    embeddings: np.ndarray,
    labels: np.ndarray,
    make_head: Callable[[int], Any],
    *,
    strategies: Sequence[str] = ("auto", "random"),
    seeds: Sequence[int] = (0,),
    start_per_class: int = 1,
    n_labels: int = 300,
    batch: int = 10,
    holdout_fraction: float = 0.1,
    semi_supervised: bool = True,
    progress: Callable[[int], None] | None = None,
    with_random: bool = True,
    query_params: dict[str, Any] | None = None,
    sampled: bool = False,
    sample_params: dict[str, Any] | None = None,
    annotators: Annotators | None = None,
) -> OfflineResult:
    """Run every strategy (and ``random``) from the same start per seed up to ``n_labels`` labels.

    ``labels`` must be integer class indices (``-1`` is the unlabelled marker for a semi-supervised head).
    ``progress(1)`` is called after every fit. ``query_params`` go to :func:`learner.query.query` (e.g.
    ``switch_per_class``); ``with_random=False`` skips the random arm (only for tuning runs). ``sampled`` draws
    every non-random strategy's batches with :func:`learner.query.sampled_query` (``sample_params``: its
    ``epsilon``, ``power``, ``candidates``). ``annotators``: noisy simulated annotators and the label checks
    (issue 20; default perfect, no checks); with noise, each curve's ``rounds`` hold one record per round and
    seed (suspects' precision and recall, reported accuracy).
    """
    annotators = annotators or PERFECT
    embeddings = np.asarray(embeddings, dtype=np.float32)
    labels = np.asarray(labels)
    if labels.dtype.kind not in "iu":
        raise ValueError("labels must be integer class indices")
    unknown = [s for s in strategies if s not in STRATEGIES]
    if unknown:
        raise ValueError(f"unknown strategies {unknown}; choose among {', '.join(STRATEGIES)}")
    if start_per_class < 0 or batch < 1 or n_labels < 1:
        raise ValueError("start_per_class must be >= 0, batch and n_labels >= 1")
    names = list(dict.fromkeys([*strategies, *(["random"] if with_random else [])]))
    classes = np.unique(labels)
    curves = {name: StrategyCurve([], []) for name in names}
    full = []
    for seed in seeds:
        pool, holdout = holdout_split(labels, holdout_fraction, seed)
        start = (budget_picks(labels, pool, Budget("start", per_class=start_per_class), seed)
                 if start_per_class else np.zeros(0, dtype=np.int64))
        _, full_accuracy = _fit_and_score(make_head, seed, embeddings, labels, pool, np.zeros(0, np.int64), holdout,
                                          classes, semi_supervised)
        full.append(full_accuracy)
        finals = []
        for name in names:
            rounds: list[dict[str, Any]] = []
            counts, accuracies = _one_run(
                name, seed, embeddings, labels, pool, holdout, start, classes, make_head, n_labels, batch,
                semi_supervised, progress, query_params or {},
                {**(sample_params or {})} if sampled and name != "random" else None, annotators, rounds,
            )
            curve = curves[name]
            if not curve.n_labels:
                curve.n_labels = counts
            elif curve.n_labels != counts:
                raise RuntimeError(f"{name}: rounds differ between seeds ({counts} vs {curve.n_labels})")
            curve.accuracies.append(accuracies)
            if annotators.noisy:
                curve.rounds.append(rounds)
            logger.debug("seed %d %s: %s", seed, name, " ".join(f"{n}:{a:.3f}" for n, a in zip(counts, accuracies)))
            finals.append(f"{name} {accuracies[-1]:.1%}" if accuracies else f"{name} -")
        # One line per seed, so a long run without progress bars still shows that (and how) it goes.
        logger.info("seed %d (%d of %d) at %d labels: %s; all labels %.1f%%", seed, len(full), len(seeds),
                    counts[-1] if counts else 0, ", ".join(finals),
                    100 * full_accuracy)
    return OfflineResult(
        curves, float(np.mean(full)), len(seeds),
        settings={"start_per_class": start_per_class, "n_labels": n_labels, "batch": batch,
                  "holdout_fraction": holdout_fraction, "seed_list": list(seeds),
                  "annotators": annotators.to_dict(),
                  **({"sampled": {**(sample_params or {})}} if sampled else {})},
    )


#: A rank only a simulation has: second looks go to labels known to be wrong (every labelled item, suspect or
#: not), most suspect first. Not a rule: the upper bound of what any detection could buy with the same share.
ORACLE = "oracle"


@dataclass(frozen=True)
class Annotators:
    """Who answers in the offline loop: the error model and whether the loop checks labels (issue 20)."""

    noise: float = 0.0  # :class:`learner.noise.NoisyAnnotator`'s error rate
    accept_guess: float = 0.0  # share of errors that take the (wrong) pre-selected guess
    checks: bool = False  # suspects -> second looks (training) and re-asks (holdout), settled by consensus
    max_second_look_share: float = 0.2  # :func:`learner.budget.split_batch`'s share
    rule: str = "share"  # split_batch's rule: "share" (measured best) or "activelab"
    rank: str = DEFAULT_RANK  # rule "share": which suspects get the second looks first, "self_confidence" or "activelab"
    leave_out: float = 0.0  # share of the suspects not yet looked at twice left out of training (most suspect first)
    max_self_confidence: float = DEFAULT_MAX_SELF_CONFIDENCE  # a suspect above this self-confidence gets no second look
    min_top_confidence: float = DEFAULT_MIN_TOP_CONFIDENCE  # ... nor one whose top class is less likely than this
    looks_from_per_class: float = DEFAULT_LOOKS_FROM_PER_CLASS  # second looks only from this many labels spent a class
    folds: int = 5  # out-of-fold probabilities for the checks
    holdout_checks_per_round: int = 2  # at most this many suspected holdout labels asked again per round
    diagnose_at: tuple[int, ...] = ()  # without checks: label counts at which to list suspects (empty: every round)

    def __post_init__(self) -> None:
        if self.rank not in (*RANKS, ORACLE):
            raise ValueError(f"rank must be one of {', '.join((*RANKS, ORACLE))}, not {self.rank!r}")
        if not 0.0 <= self.leave_out <= 1.0:
            raise ValueError(f"leave_out must be in [0, 1], got {self.leave_out}")
        if not 0.0 <= self.max_self_confidence <= 1.0:
            raise ValueError(f"max_self_confidence must be in [0, 1], got {self.max_self_confidence}")
        if not 0.0 <= self.min_top_confidence <= 1.0:
            raise ValueError(f"min_top_confidence must be in [0, 1], got {self.min_top_confidence}")
        if self.looks_from_per_class < 0:
            raise ValueError(f"looks_from_per_class must be >= 0, got {self.looks_from_per_class}")

    @property
    def noisy(self) -> bool:
        return self.noise > 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"noise": self.noise, "accept_guess": self.accept_guess, "checks": self.checks,
                "max_second_look_share": self.max_second_look_share, "rule": self.rule, "rank": self.rank,
                "leave_out": self.leave_out, "max_self_confidence": self.max_self_confidence,
                "min_top_confidence": self.min_top_confidence, "looks_from_per_class": self.looks_from_per_class,
                "folds": self.folds,
                "holdout_checks_per_round": self.holdout_checks_per_round}


PERFECT = Annotators()


def _precision_recall(flagged: np.ndarray, wrong: np.ndarray) -> tuple[float | None, float | None]:
    """Precision and recall of the ``flagged`` rows against the rows whose label is ``wrong`` (a bool mask)."""
    hits = int(wrong[flagged].sum()) if len(flagged) else 0
    precision = hits / len(flagged) if len(flagged) else None
    recall = hits / int(wrong.sum()) if wrong.any() else None
    return precision, recall


class _Answers:
    """Every answer given in one run: items x annotators (0: first answer, 1: the second look), NaN = none."""

    def __init__(self, n_items: int) -> None:
        self.table = np.full((n_items, 2), np.nan)

    def give(self, rows: np.ndarray, column: int, answers: np.ndarray) -> None:
        self.table[rows, column] = answers

    def looked_twice(self, rows: np.ndarray) -> np.ndarray:
        return ~np.isnan(self.table[rows, 1])


def _settle(answers: _Answers, rows: np.ndarray, current: np.ndarray, oof: np.ndarray) -> np.ndarray:
    """The labels of ``rows`` after the vote: CROWDLAB's consensus where an item has two answers, else the answer."""
    from learner.label_issues import consensus

    settled = current.copy()
    twice = answers.looked_twice(rows)
    if twice.any():
        verdict = consensus(answers.table[rows], oof)  # CROWDLAB's cautions go to the log (label_issues)
        settled[twice] = verdict.labels[twice]
    return settled


def _one_run(
    strategy: str, seed: int, embeddings: np.ndarray, labels: np.ndarray, pool: np.ndarray, holdout: np.ndarray,
    start: np.ndarray, classes: np.ndarray, make_head: Callable[[int], Any], n_labels: int, batch: int,
    semi_supervised: bool, progress: Callable[[int], None] | None, query_params: dict[str, Any],
    sample_params: dict[str, Any] | None = None,
    annotators: Annotators = PERFECT, rounds: list[dict[str, Any]] | None = None,
) -> tuple[list[int], list[float]]:
    """One strategy's run; ``counts`` are labels *spent* (a second look costs one), accuracies against true labels.

    With noisy ``annotators`` every answer (start labels, picks, the holdout's labels) comes from a
    :class:`learner.noise.NoisyAnnotator`; the pre-selected guess is the current head's class for a pick, none
    for the start labels, the holdout and second looks. ``rounds`` (when given) gets one record per round: the
    accuracy the noisy holdout would report, the suspects' precision and recall against the wrong labels, the
    batch's split.
    """
    from learner.noise import NoisyAnnotator

    n_classes = len(classes)
    first = NoisyAnnotator(annotators.noise, annotators.accept_guess, seed=[seed, 2])
    second = NoisyAnnotator(annotators.noise, 0.0, seed=[seed, 3])  # another person, shown no guess
    answers = _Answers(len(labels))
    observed = np.asarray(labels, dtype=np.int64).copy()  # what training sees (the true labels until answered)
    labelled = np.asarray(start, dtype=np.int64)
    spent = len(labelled)
    if annotators.noisy:
        given = first.answers(labels[labelled], None, n_classes)
        answers.give(labelled, 0, given)
        observed[labelled] = given
        holdout_given = NoisyAnnotator(annotators.noise, 0.0, seed=[seed, 4]).answers(labels[holdout], None, n_classes)
        observed[holdout] = holdout_given
        answers.give(holdout, 0, holdout_given)
    in_pool = np.ones(len(labels), dtype=bool)
    in_pool[holdout] = False
    in_pool[labelled] = False
    counts, accuracies = [], []
    head = None
    holdout_rechecked = 0
    rng = np.random.default_rng([seed, 1])
    checking = annotators.checks and annotators.noisy
    while True:
        unlabelled = np.flatnonzero(in_pool)
        record: dict[str, Any] = {}
        oof = None
        suspects = np.zeros(0, np.int64)
        diagnose = rounds is not None and (not annotators.diagnose_at or spent in annotators.diagnose_at)
        if annotators.noisy and len(labelled) and (checking or diagnose):
            # Before the fit: the out-of-fold heads never see the round's head, and leave_out needs the suspects.
            oof, suspects = _suspects(make_head, seed, embeddings, observed, labelled, n_classes, annotators.folds)
        if len(labelled):
            train, left_out = labelled, np.zeros(0, np.int64)
            if checking and annotators.leave_out and len(suspects):
                left_out = _left_out(suspects, labelled, answers, annotators.leave_out)
                train = np.delete(labelled, left_out)
            head, accuracy = _fit_and_score(make_head, seed, embeddings, observed, train,
                                            np.concatenate([unlabelled, labelled[left_out]]), holdout,
                                            classes, semi_supervised, truth=labels)
            counts.append(spent)
            accuracies.append(accuracy)
            if progress is not None:
                progress(1)
            if annotators.noisy and rounds is not None:
                record = _round_record(head, embeddings, labels, observed, labelled, holdout, classes, spent, accuracy)
                if checking:  # clean learning: how many labels sat out this fit, and how many of them were wrong
                    record["n_left_out"] = len(left_out)
                    record["left_out_wrong"] = int((observed[labelled[left_out]] != labels[labelled[left_out]]).sum())
        if oof is not None:
            wrong = observed[labelled] != labels[labelled]
            record["suspect_precision"], record["suspect_recall"] = _precision_recall(suspects, wrong)
            record["n_suspects"] = len(suspects)
            record["n_wrong"] = int(wrong.sum())
        if checking and head is not None:
            holdout_rechecked += _check_holdout(head, embeddings, labels, observed, holdout, classes, answers, second,
                                                 annotators.holdout_checks_per_round)
            record["holdout_rechecked"] = holdout_rechecked
        if record and rounds is not None:
            rounds.append(record)
        if spent >= n_labels or not len(unlabelled):
            return counts, accuracies
        n = min(batch, n_labels - spent)
        n_new, looks = n, np.zeros(0, np.int64)
        if (checking and oof is not None and len(suspects)
                and second_looks_open(spent, n_classes, annotators.looks_from_per_class)):
            n_new, looks = _split(head, embeddings, labelled, unlabelled, suspects, answers, oof, observed[labelled],
                                  classes, n, annotators, truth=labels[labelled])
            looked_wrong = int((observed[labelled[looks]] != labels[labelled[looks]]).sum())
            record["split"] = {"new": n_new, "second_looks": len(looks), "second_looks_at_wrong_labels": looked_wrong}
        if n_new:
            pick = query if sample_params is None else sampled_query
            picked = pick(
                head if head is not None else make_head(seed), embeddings[unlabelled], n_new, strategy,
                random_state=int(rng.integers(2**31 - 1)), X_labelled=embeddings[labelled] if len(labelled) else None,
                n_classes=n_classes, **query_params, **(sample_params or {}),
            ).indices
            chosen = unlabelled[picked]
            if annotators.noisy:
                guesses = (np.argmax(proba_in_order(head, embeddings[chosen], classes), axis=1) if head is not None
                           else None)
                given = first.answers(labels[chosen], guesses, n_classes)
                answers.give(chosen, 0, given)
                observed[chosen] = given
            labelled = np.concatenate([labelled, chosen])
            in_pool[chosen] = False
        if len(looks):
            rows = labelled[looks]
            answers.give(rows, 1, second.answers(labels[rows], None, n_classes))
            observed[labelled] = _settle(answers, labelled, observed[labelled], _pad(oof, len(labelled), n_classes))
        spent += n_new + len(looks)


def _left_out(suspects: np.ndarray, labelled: np.ndarray, answers: _Answers, share: float) -> np.ndarray:
    """Rows of ``labelled`` kept out of the fit (clean learning): the most suspect ``share`` of the suspects
    not settled by a second look yet (``suspects`` is most suspect first)."""
    unsettled = suspects[~answers.looked_twice(labelled[suspects])]
    return unsettled[: math.ceil(share * len(unsettled))].astype(np.int64)


def _pad(oof: np.ndarray, n_rows: int, n_classes: int) -> np.ndarray:
    """``oof`` with uniform rows for the items labelled since it was computed (they have one answer: no vote)."""
    if len(oof) >= n_rows:
        return oof
    return np.concatenate([oof, np.full((n_rows - len(oof), n_classes), 1.0 / n_classes)])


def _suspects(
    make_head: Callable[[int], Any], seed: int, embeddings: np.ndarray, observed: np.ndarray, labelled: np.ndarray,
    n_classes: int, folds: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Out-of-fold probabilities on the labelled rows (supervised: the pool is left out) and cleanlab's suspects."""
    from learner.label_issues import find_suspects
    from learner.oof import out_of_fold_proba

    y = observed[labelled]
    if not len(y) or int(np.bincount(y).max()) < 2:  # one label a class: nothing to find, no fits spent on it
        return np.full((len(y), n_classes), 1.0 / n_classes), np.zeros(0, np.int64)
    oof = out_of_fold_proba(lambda: make_head(seed), embeddings[labelled], y, n_classes, folds=folds, seed=seed)
    return oof, find_suspects(y, oof).indices


def _split(
    head: Any, embeddings: np.ndarray, labelled: np.ndarray, unlabelled: np.ndarray, suspects: np.ndarray,
    answers: _Answers, oof: np.ndarray, given: np.ndarray, classes: np.ndarray, n: int, annotators: Annotators,
    truth: np.ndarray | None = None,
) -> tuple[int, np.ndarray]:
    """:func:`learner.budget.split_batch` on the suspects not looked at twice, ranked by ActiveLab's scores (or by
    self-confidence, ``annotators.rank``): (new items, rows of ``labelled`` to look at again). ``given``: the
    labels ``oof`` was computed against; ``truth``: the true labels (rank :data:`ORACLE` only)."""
    from learner.budget import second_look_candidates, self_confidence, split_batch
    from learner.label_issues import second_look_scores

    pool_proba = proba_in_order(head, embeddings[unlabelled], classes)
    labelled_scores, pool_scores = second_look_scores(answers.table[labelled], oof, pool_proba)
    # cleanlab's label quality, the out-of-fold probability of the label (rule "activelab" compares ActiveLab's
    # scores with the pool's: its own ranking)
    if annotators.rank in ("self_confidence", ORACLE) and annotators.rule == "share":
        labelled_scores = self_confidence(oof, given)
    eligible = np.zeros(len(labelled), dtype=bool)
    if annotators.rank == ORACLE:  # every wrong label not looked at twice: perfect detection
        eligible[(given != truth) & ~answers.looked_twice(labelled)] = True
    else:
        eligible[suspects[~answers.looked_twice(labelled[suspects])]] = True
    candidates = second_look_candidates(oof, given, eligible, labelled_scores, annotators.max_self_confidence,
                                        annotators.min_top_confidence)
    split = split_batch(n, 0, candidates, pool_scores, max_second_look_share=annotators.max_second_look_share,
                        rule=annotators.rule)
    return split.new, split.second_looks


def _check_holdout(
    head: Any, embeddings: np.ndarray, labels: np.ndarray, observed: np.ndarray, holdout: np.ndarray,
    classes: np.ndarray, answers: _Answers, second: Any, limit: int,
) -> int:
    """The ``limit`` most suspect holdout labels asked again (blind, another person), settled by the vote; how many.

    The head never trained on the holdout, so its probabilities there are already out of sample.
    """
    from learner.label_issues import find_suspects

    proba = proba_in_order(head, embeddings[holdout], classes)
    flagged = find_suspects(observed[holdout], proba).indices
    flagged = flagged[~answers.looked_twice(holdout[flagged])][:limit]
    if not len(flagged):
        return 0
    rows = holdout[flagged]
    answers.give(rows, 1, second.answers(labels[rows], None, len(classes)))
    observed[holdout] = _settle(answers, holdout, observed[holdout], proba)
    return len(flagged)


def _round_record(
    head: Any, embeddings: np.ndarray, labels: np.ndarray, observed: np.ndarray, labelled: np.ndarray,
    holdout: np.ndarray, classes: np.ndarray, spent: int, accuracy: float,
) -> dict[str, Any]:
    predicted = classes[np.argmax(proba_in_order(head, embeddings[holdout], classes), axis=1)]
    return {
        "n_labels": spent,
        "n_items": len(labelled),
        "accuracy": accuracy,  # against the true labels
        "reported_accuracy": float(np.mean(predicted == observed[holdout])),  # against the holdout's answers
        "holdout_wrong": int((observed[holdout] != labels[holdout]).sum()),
        "train_wrong": int((observed[labelled] != labels[labelled]).sum()),
    }
