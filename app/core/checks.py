"""The label checks after a retrain: suspected label errors, consensus over several answers, second looks.

:func:`check_labels` runs in the scheduler's ``check-labels`` job once a new version serves (not inside the
retrain: five out-of-fold fits cost several retrains, see ``benchmarks/label_checks.py``). On the cached embeddings
of the labelled training items it computes out-of-fold probabilities (:func:`learner.oof.out_of_fold_proba`: no
label vouches for itself), then:

- where an item has several answers (two annotators, or a second look), CROWDLAB's consensus
  (:func:`learner.label_issues.consensus`) is its label from the next retrain on, not the newest answer; each
  annotator's estimated quality and their agreement go to the report;
- cleanlab's suspects (:func:`learner.label_issues.find_suspects`) are stored for the version
  (``GET /v1/items?suspect=true``), and the most suspect items not looked at twice yet are queued as second looks:
  a Label Studio task of their own with no guess, noting who answered already (Label Studio 1.23.2's open-source
  edition has no task assignment, so the note is in the task's data);
- the holdout's labels are checked by the serving version itself (it never trained on them, so its probabilities
  there are already out of sample) and reported apart: a wrong holdout label bends the measure, not the model. Its
  suspects are asked again the same way (blind, not for who answered), first in the batch (:func:`split_budget`);
  the measure then reads each holdout item's majority answer (:func:`vote`), and no holdout answer ever trains
  (the training labels are the non-holdout items' only);
- where an item's answers tie one against one after a second look (training or holdout), one more annotator is
  asked, up to ``service.max_looks_per_item`` looks; answers that agree are never asked again.

When a consensus changes a label the serving version trained on, the check retrains at once.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from app.store import Answer, LabelCheck, LabelledItem

if TYPE_CHECKING:
    from app.core.training import Trainer

logger = logging.getLogger(__name__)

#: The meta key holding the newest check's summary (annotators' agreement and quality, counts, seconds).
SUMMARY_KEY = "label_checks"
#: The meta key holding each checked version's review batch split (new items, second looks, holdout): the report's.
SPLITS_KEY = "batch_splits"


def check_head_factory() -> Any:
    """A fresh head of the service's default kind (the out-of-fold heads never warm-start from the served one)."""
    from app.core.training import default_head_factory

    return default_head_factory(None)


@dataclass
class CheckResult:
    """What one run of the checks found."""

    version: str
    n_checked: int = 0
    n_suspects: int = 0
    n_holdout_checked: int = 0
    n_holdout_suspects: int = 0
    n_consensus: int = 0
    consensus_changed: int = 0
    second_looks: int = 0
    holdout_second_looks: int = 0  # of ``second_looks``: suspected (or tied) holdout labels asked again
    tie_looks: int = 0  # of ``second_looks``: items asked once more because their answers tie
    annotator_quality: dict[str, float] = field(default_factory=dict)
    mean_agreement: float | None = None
    batch_split: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return dict(self.__dict__)


def trained_labels(store: Any, labelled: list[LabelledItem]) -> list[LabelledItem]:
    """``labelled`` (each item's newest answer) with the stored consensus where it still holds: what trains."""
    consensus = store.consensus_labels()
    return [
        dataclasses.replace(row, label=consensus[row.item_id][0])
        if row.item_id in consensus and consensus[row.item_id][1] == row.label_id else row
        for row in labelled
    ]


def vote(answers: Iterable[Answer]) -> tuple[str, bool]:
    """One item's measured label from its answers (oldest first; an annotator's newest counts): (label, tied).

    The majority; a tie goes to the newest answer among the tied labels until a further look settles it (the
    tie itself queues one: :func:`check_labels`). Not CROWDLAB: its consensus weighs the model's probabilities,
    and the holdout measures that very model (the serving version's, or an older one re-measured): a label the
    model helped choose would flatter it. A vote of people alone keeps the measure independent of what it
    measures."""
    newest: dict[str, Answer] = {}
    for answer in answers:
        newest[answer.annotator] = answer
    counts = Counter(answer.label for answer in newest.values())
    top = max(counts.values())
    tied = {label for label, count in counts.items() if count == top}
    if len(tied) == 1:
        return next(iter(tied)), False
    return max((a for a in newest.values() if a.label in tied), key=lambda a: a.label_id).label, True


def is_tie(who: dict[str, str]) -> bool:
    """Whether the answers (annotator -> label) tie at the top (one against one, two against two, ...)."""
    counts = Counter(who.values())
    return len(counts) > 1 and sum(1 for count in counts.values() if count == max(counts.values())) > 1


def holdout_votes(store: Any) -> dict[str, tuple[str, bool]]:
    """holdout item id -> (its measured label, tied) over its active answers (:func:`vote`)."""
    by_item: dict[str, list[Answer]] = defaultdict(list)
    for answer in store.answers(holdout=True):
        by_item[answer.item_id].append(answer)
    return {item: vote(answers) for item, answers in by_item.items()}


def holdout_labels(store: Any) -> list[LabelledItem]:
    """The labelled holdout as the measure reads it: each item's majority answer (:func:`vote`), not its newest."""
    votes = holdout_votes(store)
    return [
        dataclasses.replace(row, label=votes[row.item_id][0]) if row.item_id in votes else row
        for row in store.current_labels(holdout=True)
    ]


def holdout_second_look_summary(store: Any) -> dict[str, int]:
    """The holdout's second looks for the report: labels asked again, of them answered, and of those whose measured
    label is no longer the one in doubt when it was asked."""
    looks = store.second_looks_of("holdout")
    votes = holdout_votes(store)
    first = {}
    for look in looks:  # oldest first: each item's first look holds the label first in doubt
        first.setdefault(look.item_id, look.label)
    answered = {look.item_id for look in looks if look.status == "labelled"}
    changed = {item for item in answered if first.get(item) is not None and item in votes and votes[item][0] != first[item]}
    return {"asked": len(first), "answered": len(answered), "changed": len(changed)}


@dataclass(frozen=True)
class Ask:
    """One item to ask again: who answered it already, the label in doubt, why (a suspect, or a tie)."""

    item_id: str
    not_for: list[str]
    label: str
    reason: str


def looks_allowed(reason: str, max_looks_per_item: int) -> int:
    """How many second looks an item may have when asked for ``reason``: a suspect one ever (a look already taken
    answered the doubt; a tie after it is the way to a further one), a tie up to ``service.max_looks_per_item``."""
    return max_looks_per_item if reason == "tie" else 1


def askable(store: Any, asks: list[Ask], max_looks: int) -> list[Ask]:
    """The ``asks`` the store would queue (:meth:`app.store.Store.may_look_again`, under :func:`looks_allowed`)."""
    eligible = store.may_look_again({ask.item_id: looks_allowed(ask.reason, max_looks) for ask in asks})
    return [ask for ask in asks if ask.item_id in eligible]


def queue_asks(trainer: Trainer, version: str, asks: list[Ask], split: str) -> int:
    """Queue ``asks`` as second looks of ``split``, each under :func:`looks_allowed` for its reason."""
    queued = 0
    for reason in ("tie", "suspect"):
        chosen = [ask for ask in asks if ask.reason == reason]
        if chosen:
            queued += trainer.store.queue_second_looks(
                version, {ask.item_id: ask.not_for for ask in chosen}, split=split, reason=reason,
                labels={ask.item_id: ask.label for ask in chosen},
                max_looks=looks_allowed(reason, trainer.service.max_looks_per_item),
            )  # fmt: skip
    return queued


def tie_asks(store: Any, answers: dict[str, dict[str, str]], labels: dict[str, str], max_looks: int) -> list[Ask]:
    """Items whose answers tie after a second look (the looks disagree): one more look each, while below
    ``max_looks``; an item with no second look yet (two annotators of one task) is left to the vote."""
    tied = [item for item, who in answers.items() if len(who) > 1 and is_tie(who)]
    looked = store.second_looked(tied)
    asks = [Ask(item, sorted(answers[item]), labels[item], "tie") for item in sorted(tied) if item in looked]
    return askable(store, asks, max_looks)


def check_labels(trainer: Trainer, force: bool = False) -> CheckResult | None:
    """Check the labels behind the serving version (once per version unless ``force``); None when there is nothing
    to check (no model, fewer than two classes labelled, or this version checked already)."""
    from learner.label_issues import consensus, find_suspects
    from learner.oof import out_of_fold_proba

    store = trainer.store
    model = trainer.serving_model()  # the newest version, whichever process trained it
    if model is None or (not force and store.checked_version() == model.version):
        return None
    started = time.perf_counter()
    classes = list(model.classes)
    index = {name: j for j, name in enumerate(classes)}
    newest = [row for row in store.current_labels() if row.label in index and row.image_path]
    X, kept = trainer.embed_items([(r.item_id, r.content_hash, r.source, r.image_path) for r in newest])
    newest = [newest[i] for i in kept]
    y = np.array([index[row.label] for row in newest], dtype=np.int64)
    if len(np.unique(y)) < 2:
        return None
    proba = out_of_fold_proba(lambda: trainer.head_factory(None), X, y, len(classes), seed=model.max_label_id)
    result = CheckResult(model.version, n_checked=len(newest))
    row_of = {row.item_id: i for i, row in enumerate(newest)}
    answers: dict[str, dict[str, str]] = defaultdict(dict)
    for answer in store.answers():
        if answer.item_id in row_of and answer.label in index:
            answers[answer.item_id][answer.annotator] = answer.label  # oldest first: an annotator's newest wins
    several = [item for item, who in answers.items() if len(who) > 1]
    annotators = sorted({name for who in answers.values() for name in who})
    column = {name: j for j, name in enumerate(annotators)}
    matrix = np.full((len(newest), len(annotators)), np.nan)  # items x annotators, class index where answered
    for item, who in answers.items():
        for name, label in who.items():
            matrix[row_of[item], column[name]] = index[label]
    answered = ~np.isnan(matrix).all(axis=1)
    agreed: dict[str, tuple[str, float]] = {}
    if several:
        verdict = consensus(matrix[answered], proba[answered])
        for k, i in enumerate(np.flatnonzero(answered)):
            if newest[i].item_id in several:
                agreed[newest[i].item_id] = (classes[int(verdict.labels[k])], float(verdict.agreement[k]))
        result.annotator_quality = {name: float(q) for name, q in zip(annotators, verdict.annotator_quality) if not math.isnan(q)}
        result.mean_agreement = float(np.mean([agreed[item][1] for item in agreed])) if agreed else None
    result.n_consensus = len(agreed)
    before = {row.item_id: row.label for row in trained_labels(store, newest)}
    y_checked = np.array([index[agreed[row.item_id][0]] if row.item_id in agreed else y[i] for i, row in enumerate(newest)])
    suspects = find_suspects(y_checked, proba)
    checks: dict[str, LabelCheck] = {}
    for i, suggested, score in zip(suspects.indices.tolist(), suspects.suggested.tolist(), suspects.scores.tolist()):
        row = newest[i]
        checks[row.item_id] = LabelCheck(
            model_version=model.version, item_id=row.item_id, split="training", label=classes[int(y_checked[i])], suspect=True,
            suggested=classes[int(suggested)], score=float(score), newest_label_id=row.label_id,
        )  # fmt: skip
    for item, (label, agreement) in agreed.items():
        row = newest[row_of[item]]
        base = checks.get(item) or LabelCheck(model_version=model.version, item_id=item, split="training", label=label,
                                              suspect=False, newest_label_id=row.label_id)
        checks[item] = LabelCheck(**{**base.__dict__, "consensus": label, "agreement": agreement})
    result.n_suspects = len(suspects.indices)
    n_holdout_checked, holdout_suspects, holdout_asks = check_holdout(trainer, model, index)
    result.n_holdout_checked = n_holdout_checked
    result.n_holdout_suspects = len(holdout_suspects)
    store.record_label_checks(model.version, list(checks.values()) + holdout_suspects)
    result.consensus_changed = sum(1 for item, (label, _) in agreed.items() if before.get(item) != label)
    in_doubt = {row.item_id: classes[int(y_checked[i])] for i, row in enumerate(newest)}
    ties = tie_asks(store, answers, in_doubt, trainer.service.max_looks_per_item)
    split = split_budget(trainer, proba, y_checked, [newest[i].item_id for i in suspects.indices.tolist()], newest,
                         n_holdout_asks=len(holdout_asks), ties={ask.item_id for ask in ties})  # fmt: skip
    result.batch_split = split.as_dict()
    # The holdout first (it is the measure the owner decides from), then the training looks the split chose.
    result.holdout_second_looks = queue_asks(trainer, model.version, holdout_asks[: split.holdout_checks], "holdout")
    tie_of = {ask.item_id: ask for ask in ties}
    looks = [newest[i].item_id for i in split.second_looks.tolist()]
    training_asks = [tie_of.get(item) or Ask(item, sorted(answers.get(item, {})), in_doubt[item], "suspect") for item in looks]
    result.tie_looks = sum(1 for ask in training_asks if ask.reason == "tie") + sum(
        1 for ask in holdout_asks[: split.holdout_checks] if ask.reason == "tie")
    result.second_looks = result.holdout_second_looks + queue_asks(trainer, model.version, training_asks, "training")
    result.seconds = time.perf_counter() - started
    store.set_meta(SUMMARY_KEY, result.to_dict())
    store.set_meta(SPLITS_KEY, {**(store.get_meta(SPLITS_KEY) or {}), model.version: result.batch_split})
    logger.info(
        "label checks on %s: %d of %d training labels suspect, %d of %d holdout labels; %d consensus labels (%d changed); "
        "%d second looks queued (%d of holdout labels, %d for ties); %.2f s", model.version, result.n_suspects,
        result.n_checked, result.n_holdout_suspects, result.n_holdout_checked, result.n_consensus,
        result.consensus_changed, result.second_looks, result.holdout_second_looks, result.tie_looks, result.seconds,
    )  # fmt: skip
    if result.consensus_changed:
        trainer.retrain(reason="consensus", force=True)
    return result


#: The holdout's labels are checked only by a version trained on at least this many labels per class: a weaker
#: model disagrees with right labels too often (the demo's first version, 1 label per class and 73% accurate,
#: flagged 199 of its 1,000 true holdout labels), and a holdout label is a measure, not a guess to second-guess.
HOLDOUT_CHECK_MIN_PER_CLASS = 5


def check_holdout(trainer: Trainer, model: Any, index: dict[str, int]) -> tuple[int, list[LabelCheck], list[Ask]]:
    """The holdout's labels (each item's majority answer, :func:`vote`) under ``model`` (it never trained on them):
    (labels checked, suspects, the items to ask again: ties after a look first, then the suspects never looked at
    again, most suspect first). No label is judged while ``model`` has fewer than
    :data:`HOLDOUT_CHECK_MIN_PER_CLASS` labels per class; a tie is asked again whatever the model."""
    from learner.label_issues import find_suspects

    store = trainer.store
    votes = holdout_votes(store)
    rows = [row for row in holdout_labels(store) if row.label in index and row.image_path]
    answers: dict[str, dict[str, str]] = defaultdict(dict)
    for answer in store.answers(holdout=True):
        answers[answer.item_id][answer.annotator] = answer.label
    ties = tie_asks(store, {row.item_id: answers[row.item_id] for row in rows if row.item_id in answers},
                    {item: label for item, (label, _) in votes.items()}, trainer.service.max_looks_per_item)  # fmt: skip
    if model.n_labels < HOLDOUT_CHECK_MIN_PER_CLASS * len(index) or not rows:
        return 0, [], ties
    X, kept = trainer.embed_items([(r.item_id, r.content_hash, r.source, r.image_path) for r in rows])
    rows = [rows[i] for i in kept]
    if not rows:
        return 0, [], ties
    classes = list(index)
    proba = model.proba(X)
    y = np.array([index[row.label] for row in rows], dtype=np.int64)
    found = find_suspects(y, proba)
    suspects = [
        LabelCheck(model_version=model.version, item_id=rows[i].item_id, split="holdout", label=rows[i].label, suspect=True,
                   suggested=classes[int(s)], score=float(q), newest_label_id=rows[i].label_id)
        for i, s, q in zip(found.indices.tolist(), found.suggested.tolist(), found.scores.tolist())
    ]  # fmt: skip
    tied = {ask.item_id for ask in ties}
    fresh = askable(store, [Ask(c.item_id, sorted(answers.get(c.item_id, {})), c.label, "suspect") for c in suspects
                            if c.item_id not in tied], trainer.service.max_looks_per_item)  # fmt: skip
    return len(rows), suspects, ties + fresh


def split_budget(
    trainer: Trainer, proba: np.ndarray, given: np.ndarray, suspects: list[str], newest: list[LabelledItem],
    n_holdout_asks: int = 0, ties: set[str] | frozenset[str] = frozenset(),
) -> Any:
    """The next review batch split (:func:`learner.budget.split_batch`, its measured default rule).

    First the holdout's re-asks (``n_holdout_asks`` wanted: ties, then suspected holdout labels), at most
    ``service.second_look_share`` of the batch: the holdout is the measure the owner decides from, and a wrong
    holdout label bends every version's figure at once (offline, re-asking 2 in each round of 10 took the reported
    accuracy's error from about -7.5 points to within about 1-3: ``benchmarks/label_noise.py``); the cap keeps a
    noisy holdout from starving the training labels. Then holdout top-ups; then training second looks, at most
    ``service.second_look_share`` of the rest: items whose answers tie after a look (``ties``) first, then the
    suspects with the lowest self-confidence (the out-of-fold probability of the label they were given, ``given``
    against ``proba``: :func:`learner.budget.self_confidence`; it beat ActiveLab's ranking on the tuning seeds of
    ``benchmarks/label_noise.py`` and scores no pool). Only suspects the store would queue are candidates
    (:meth:`app.store.Store.may_look_again`, as :func:`queue_asks` inserts), and only once the training labels reach
    ``service.second_looks_from_per_class`` per class; the rest of the batch goes to new items."""
    from app.core.holdout import holdout_tasks_to_queue, per_refresh
    from learner.budget import second_looks_open, self_confidence, split_batch

    store, service = trainer.store, trainer.service
    counts = store.holdout_counts()
    holdout = holdout_tasks_to_queue(
        counts.n_labelled, counts.n_open, counts.n_items - counts.n_labelled - counts.n_open, service.holdout.min_labels,
        per_refresh(service.holdout, service.review_batch_size),
    ) if service.holdout.reserve else 0  # fmt: skip
    scores = self_confidence(proba, given)
    candidates = np.full(len(newest), np.nan)
    n_classes = max(len(trainer.classes), 1)
    early = not second_looks_open(len(newest), n_classes, service.second_looks_from_per_class)
    if early:
        suspects = []  # too few labels yet: a new pick is worth more than a second look (learner.budget)
    eligible = store.may_look_again({item: looks_allowed("suspect", service.max_looks_per_item) for item in suspects})
    for i, row in enumerate(newest):
        if row.item_id in ties:
            candidates[i] = -1.0  # below every probability: an open disagreement is settled first
        elif row.item_id in eligible:
            candidates[i] = scores[i]
    holdout_asks = min(n_holdout_asks, math.floor(service.second_look_share * service.review_batch_size))
    split = split_batch(service.review_batch_size, holdout, candidates, None, n_holdout_checks=holdout_asks,
                        max_second_look_share=service.second_look_share)
    if early:
        split = dataclasses.replace(split, rule=f"{split.rule}; no second looks at suspected training labels before "
                                    f"{service.second_looks_from_per_class:g} labels per class "
                                    f"({len(newest) / n_classes:.1f} now)")
    return split
