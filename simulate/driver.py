"""Annotators played from the ground truth, through the real Label Studio and the service's HTTP API.

``juicer simulate`` (:mod:`simulate.command`) wires three seams and runs a :class:`Simulation`:

- the **desk** (:class:`simulate.annotator.AnnotatorDesk`): the simulated person takes the queue's next task
  as the UI's "Label All Tasks" does (Label Studio's Uncertainty sampling), or a random open task, and posts
  the annotation exactly as the editor does;
- the **service** (:class:`ServiceClient`): ``POST /v1/retrain`` every K labels, ``GET /v1/jobs/<id>`` until
  the new version serves, ``GET /v1/models`` for one line per version, ``GET /v1/report`` at the end;
- the **ground truth** (:class:`DatasetTruth`): each item's true class, by item id, from the dataset the
  demo was seeded from (``fashion-mnist/train/00123``), or from the class folders of a folder imported unlabelled
  (:meth:`DatasetTruth.from_folder`: ``img-<content hash>``); with ``annotator`` (a
  :class:`learner.noise.NoisyAnnotator`: ``--noise``, ``--accept-guess``) the person answers wrongly at that
  rate, taking the task's pre-selected (wrong) guess with the accept-guess probability (issue 20).

Labels reach the service the way people's do: Label Studio's webhook (and the pull job as a safety net).
Before asking for a retrain the simulation waits until the service has stored the last label, so a version
is trained on every label posted before it.
"""

from __future__ import annotations

import logging
import random
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Protocol, Sequence, TypeVar
from urllib.parse import quote

import httpx

from annotation.models import version_rank

logger = logging.getLogger(__name__)

ORDERS = ("uncertainty", "random")
T = TypeVar("T")


class SimulationError(Exception):
    """The simulation cannot go on; the message says what was wrong and what to do."""


class ServiceError(SimulationError):
    """The juicer service refused a call or could not be reached; ``status`` is the HTTP status if any."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


# ---------------------------------------------------------------------------------------------- seams


class Task(Protocol):
    """What the simulation reads from a Label Studio task (``simulate.annotator.NextTask`` has it)."""

    item_id: str
    task_id: int
    model_version: str | None


class Desk(Protocol):
    """The part of ``annotation.desk.LabelStudioDesk`` that a person at Label Studio uses."""

    def next_task(self, project: Any) -> Task | None: ...

    def open_tasks(self, project: Any) -> Sequence[Task]: ...

    def queue_version(self, project: Any) -> str | None: ...

    def submit_annotation(self, task_id: int, label: str | None) -> int: ...


class GroundTruth(Protocol):
    """The true class of an item, or None for an item the dataset does not hold."""

    def label_of(self, item_id: str) -> str | None: ...


@dataclass(frozen=True)
class DatasetTruth:
    """Ground truth from a labelled dataset: item id -> class name."""

    labels: Mapping[str, str]

    @classmethod
    def from_dataset(cls, dataset: Any) -> "DatasetTruth":
        """From a ``learner.datasets.Dataset`` (its ``item_ids`` and ``label_names``)."""
        return cls(dict(zip(dataset.item_ids, dataset.label_names)))

    @classmethod
    def from_folder(cls, root: Any) -> "DatasetTruth":
        """From a folder laid out ``<class>/<image>`` that was imported *without* labels (``juicer import`` or
        ``juicer serve --images``): each file's item id is the one the import gives its content, so the folder's
        class names are the truth of the imported items, whatever their paths."""
        from app.core.uploads import upload_item_id
        from learner.datasets import load_folder

        dataset = load_folder(root)
        return cls({upload_item_id(source.content_hash): name for source, name in zip(dataset.sources, dataset.label_names)})

    def label_of(self, item_id: str) -> str | None:
        """The item's true class, or None when the dataset lacks the item."""
        return self.labels.get(item_id)


# ---------------------------------------------------------------------------------------------- the service


class ServiceClient:
    """The juicer service's HTTP API, as a client program sees it (bearer token, problem bodies)."""

    def __init__(
        self,
        base_url: str,
        api_token: str | None = None,
        *,
        timeout_s: float = 30.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        headers = {"Authorization": f"Bearer {api_token}"} if api_token else {}
        self.base_url = base_url.rstrip("/")
        self._http = httpx.Client(base_url=self.base_url, headers=headers, timeout=timeout_s, transport=transport)

    def close(self) -> None:
        """Close the connections."""
        self._http.close()

    def _call(self, method: str, path: str, doing: str, **kwargs: Any) -> Any:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise ServiceError(
                f"{doing}: cannot reach the juicer service at {self.base_url} ({type(exc).__name__}: {exc}); "
                "start it with `juicer serve` or pass --service URL"
            ) from exc
        if response.status_code >= 400:
            try:
                body = response.json()
                detail = body.get("detail") or body.get("title") or response.text
            except ValueError:
                detail = response.text[:300]
            hint = " (check service.api_token / JUICER_SERVICE__API_TOKEN)" if response.status_code == 401 else ""
            raise ServiceError(f"{doing}: the service answered {response.status_code}: {detail}{hint}", response.status_code)
        return response.json()

    def current_model(self) -> dict[str, Any] | None:
        """``GET /v1/models/current``, or None while no model has been trained."""
        try:
            return self._call("GET", "/v1/models/current", "reading the serving model")
        except ServiceError as exc:
            if exc.status in (404, 503):
                return None
            raise

    def models(self) -> list[dict[str, Any]]:
        """``GET /v1/models``: every version, oldest first."""
        return list(self._call("GET", "/v1/models", "listing model versions")["models"])

    def item(self, item_id: str) -> dict[str, Any] | None:
        """``GET /v1/items/<id>`` (with its current label), or None for an unknown item."""
        try:
            return self._call("GET", f"/v1/items/{quote(item_id, safe='/')}", f"reading item {item_id}")
        except ServiceError as exc:
            if exc.status == 404:
                return None
            raise

    def retrain(self) -> int:
        """``POST /v1/retrain``; the job id to poll."""
        return int(self._call("POST", "/v1/retrain", "asking for a retrain")["job_id"])

    def job(self, job_id: int) -> dict[str, Any]:
        """``GET /v1/jobs/<id>``: status queued | running | done | failed, and the result."""
        return self._call("GET", f"/v1/jobs/{job_id}", f"reading job {job_id}")

    def report(self) -> dict[str, Any]:
        """``GET /v1/report``: one point per model version."""
        return self._call("GET", "/v1/report", "reading the report")


# ---------------------------------------------------------------------------------------------- polling


@dataclass
class Clock:
    """Time and waiting, injectable so that tests run without real sleeps."""

    now: Callable[[], float] = time.monotonic
    sleep: Callable[[float], None] = time.sleep


def poll(
    check: Callable[[], T | None],
    *,
    deadline_s: float,
    what: str,
    clock: Clock,
    interval_s: float = 0.25,
    max_interval_s: float = 2.0,
) -> T:
    """Call ``check`` until it returns something other than None; SimulationError after ``deadline_s``."""
    end = clock.now() + deadline_s
    wait = interval_s
    while True:
        result = check()
        if result is not None:
            return result
        if clock.now() >= end:
            raise SimulationError(f"gave up after {deadline_s:g} s waiting for {what}")
        clock.sleep(min(wait, max(0.0, end - clock.now())))
        wait = min(wait * 1.5, max_interval_s)


# ---------------------------------------------------------------------------------------------- the loop


@dataclass
class SimulationResult:
    """What a run did: labels posted, skipped tasks, versions seen (oldest first), and the final report."""

    n_labels: int = 0
    n_skipped: int = 0
    n_wrong: int = 0  # labels posted that differ from the ground truth (a noisy annotator)
    n_took_guess: int = 0  # of those, the pre-selected guess accepted
    versions: list[dict[str, Any]] = field(default_factory=list)
    report: dict[str, Any] = field(default_factory=dict)


def describe_version(model: Mapping[str, Any]) -> str:
    """One line for a model version: labels used and holdout accuracy."""
    per_class = model.get("labels_per_class") or {}
    n_labels = int(model.get("n_labels") or 0)
    accuracy = model.get("holdout_accuracy")
    shown = "n/a" if accuracy is None else f"{100 * accuracy:.1f}%"
    classes = f" ({n_labels / len(per_class):.1f}/class)" if per_class else ""
    return f"model {model.get('model_version')}: {n_labels} labels{classes}, holdout accuracy {shown}"


class Simulation:
    """Annotators from the ground truth: take tasks, post labels, retrain every ``retrain_every`` labels."""

    def __init__(
        self,
        *,
        service: ServiceClient,
        desk: Desk,
        project: Any,
        truth: GroundTruth,
        order: str = "uncertainty",
        retrain_every: int = 10,
        seed: int = 0,
        label_wait_s: float = 60.0,
        retrain_wait_s: float = 300.0,
        queue_wait_s: float = 60.0,
        desk_retries: int = 5,
        say: Callable[[str], None] = print,
        clock: Clock | None = None,
        annotator: Any = None,
        classes: Sequence[str] = (),
    ) -> None:
        if order not in ORDERS:
            raise ValueError(f"order must be one of {', '.join(ORDERS)}, not {order!r}")
        if retrain_every < 1:
            raise ValueError(f"retrain_every must be at least 1, not {retrain_every}")
        if annotator is not None and not annotator.perfect and len(classes) < 2:
            raise ValueError("a noisy annotator needs the project's classes (at least two) to answer wrongly from")
        self.service = service
        self.desk = desk
        self.project = project
        self.truth = truth
        self.order = order
        self.retrain_every = retrain_every
        self.rng = random.Random(seed)
        self.label_wait_s = label_wait_s
        self.retrain_wait_s = retrain_wait_s
        self.queue_wait_s = queue_wait_s
        self.desk_retries = desk_retries
        self.say = say
        self.clock = clock or Clock()
        self.annotator = annotator  # learner.noise.NoisyAnnotator, or None: always the true label
        self.classes = list(classes)
        self._printed: set[str] = set()
        self._skipped: set[int] = set()  # tasks this run skipped (unknown to the ground truth)
        self._open: list[Task] = []  # --order random: open tasks listed this round, not yet taken

    # -- what a person does ----------------------------------------------------------------------------

    def _desk(self, what: str, call: Callable[..., T], *args: Any) -> T:
        """A desk call, tried again (with backoff) on errors marked ``retryable``, as a person reloads the page.

        Label Studio times out under load. And when the service re-scores the queue it replaces the predictions
        of open tasks (delete, then create): an annotation posted in between names a parent prediction that is
        gone, and Label Studio answers 500 (foreign key) or 400 ("parent_prediction ... does not exist"). A
        person sees an error and reloads the task; so does this, since the desk re-reads the task each time.
        """
        for attempt in range(1, self.desk_retries + 2):
            try:
                return call(*args)
            except Exception as exc:  # annotation.errors.AnnotationError carries `retryable`; others propagate
                stale = getattr(exc, "status", None) == 400 and "parent_prediction" in str(exc)
                if not (getattr(exc, "retryable", False) or stale) or attempt > self.desk_retries:
                    raise
                logger.warning("%s failed (%s); retry %d of %d", what, exc, attempt, self.desk_retries)
                self.clock.sleep(min(2.0**attempt, 30.0))
        raise AssertionError("unreachable")

    def _take_task(self) -> Task | None:
        if self.order == "uncertainty":
            task = self._desk("taking the next task", self.desk.next_task, self.project)
            return None if task is None or task.task_id in self._skipped else task
        # One listing per round (it is the heaviest call here): a person scanning the task list picks from it
        # until it is used up or a retrain refreshes the queue.
        if not self._open:
            listed = self._desk("listing open tasks", self.desk.open_tasks, self.project)
            self._open = [t for t in listed if t.task_id not in self._skipped]
        return self._open.pop(self.rng.randrange(len(self._open))) if self._open else None

    def _wait_for_task(self) -> Task | None:
        try:
            return poll(self._take_task, deadline_s=self.queue_wait_s, what="a task in Label Studio's queue", clock=self.clock)
        except SimulationError:
            return None

    # -- what the service does ------------------------------------------------------------------------

    def _wait_for_label(self, item_id: str, label: str) -> None:
        def stored() -> bool | None:
            item = self.service.item(item_id)
            current = (item or {}).get("label") or {}
            return True if current.get("label") == label else None

        poll(stored, deadline_s=self.label_wait_s, what=f"the service to store the label of {item_id} (webhook or pull)", clock=self.clock)

    def _retrain(self) -> dict[str, Any]:
        job_id = self.service.retrain()

        def finished() -> dict[str, Any] | None:
            job = self.service.job(job_id)
            return job if job.get("status") in ("done", "failed") else None

        job = poll(finished, deadline_s=self.retrain_wait_s, what=f"retrain job {job_id}", clock=self.clock)
        if job["status"] == "failed":
            raise SimulationError(f"retrain job {job_id} failed: {job.get('error')}; see the service's log")
        return job.get("result") or {}

    def _wait_for_queue(self, version: str) -> None:
        """Until Label Studio's queue serves predictions of ``version`` (the service re-scored the pool)."""
        if self.order == "random":

            def relisted() -> list[Task] | None:
                listed = list(self._desk("listing open tasks", self.desk.open_tasks, self.project))
                return listed if not listed or any(t.model_version == version for t in listed) else None

            try:
                listed = poll(relisted, deadline_s=self.queue_wait_s, what=f"open tasks scored by {version}", clock=self.clock)
            except SimulationError as exc:
                logger.warning("%s; going on with the older predictions", exc)
                return
            self._open = [t for t in listed if t.task_id not in self._skipped]
            return

        # Not by polling /next: Label Studio (1.23.2, projects/functions/next_task.py) locks the task a /next hands
        # out to the user for TASK_LOCK_TTL (24 h) and hands that locked task out first on every later /next until it
        # is answered. A poll before the re-score lands would lock the old version's least certain task: the
        # simulator then answered it first whatever the new version's order, and waited to the deadline whenever it
        # held no prediction of the new version (/next serves only the project's model version's predictions).
        # Uncertainty sampling orders by the project's model version, which the desk moves only once that
        # version's predictions are in (and never back): reading it takes no lock. A newer one (the service
        # retrained by itself meanwhile) will do.
        if not self._desk("listing open tasks", self.desk.open_tasks, self.project):
            return  # nothing left to re-score: the project's version may never move

        def refreshed() -> bool | None:
            current = self._desk("reading the project's model version", self.desk.queue_version, self.project)
            return True if version_rank(current) >= version_rank(version) else None

        try:
            poll(refreshed, deadline_s=self.queue_wait_s, what=f"review tasks scored by {version}", clock=self.clock)
        except SimulationError as exc:
            logger.warning("%s; going on with the older predictions", exc)

    def _print_new_versions(self, result: SimulationResult) -> None:
        for model in self.service.models():
            version = str(model["model_version"])
            if version not in self._printed:
                self._printed.add(version)
                result.versions.append(model)
                self.say(describe_version(model))

    # -- the run -----------------------------------------------------------------------------------------

    def run(self, n_labels: int, progress: Callable[[int], None] | None = None) -> SimulationResult:
        """Post ``n_labels`` labels from the ground truth, retraining every ``retrain_every``; then the report."""
        result = SimulationResult()
        self._print_new_versions(result)
        since_retrain = 0
        last: tuple[str, str] | None = None
        while result.n_labels < n_labels:
            task = self._take_task() or (None if since_retrain else self._wait_for_task())
            if task is None and since_retrain:
                self._cycle(result, last)
                last, since_retrain = None, 0
                task = self._wait_for_task()
            if task is None:
                self.say(
                    f"Label Studio's queue is empty after {result.n_labels} labels (waited {self.queue_wait_s:g} s): "
                    "the pool may be used up; stopping early"
                )
                break
            label = self.truth.label_of(task.item_id)
            if label is None:
                logger.warning("item %s is not in the ground truth; skipping its task %s", task.item_id, task.task_id)
                self._desk(f"skipping task {task.task_id}", self.desk.submit_annotation, task.task_id, None)
                self._skipped.add(task.task_id)
                result.n_skipped += 1
                continue
            label = self._answer(task, label, result)
            self._desk(f"annotating task {task.task_id}", self.desk.submit_annotation, task.task_id, label)
            result.n_labels += 1
            since_retrain += 1
            last = (task.item_id, label)
            if progress is not None:
                progress(1)
            if since_retrain >= self.retrain_every:
                self._cycle(result, last, more_to_come=result.n_labels < n_labels)
                last, since_retrain = None, 0
        if since_retrain:
            self._cycle(result, last, more_to_come=False)
        result.report = self.service.report()
        return result

    def _answer(self, task: Task, true: str, result: SimulationResult) -> str:
        """What the (possibly noisy) person submits for ``task``: the pre-selected guess is its prediction."""
        if self.annotator is None or self.annotator.perfect:
            return true
        guess = getattr(task, "predicted_label", None)
        label = str(self.annotator.answer(true, guess, self.classes))
        if label != true:
            result.n_wrong += 1
            result.n_took_guess += int(label == guess)
        return label

    def _cycle(self, result: SimulationResult, last: tuple[str, str] | None, more_to_come: bool = True) -> None:
        """Wait for the last label to be stored, retrain, print the new versions, wait for the refreshed queue.

        ``more_to_come`` False (the run's last retrain) skips waiting for the queue nobody will take from.
        """
        if last is not None:
            self._wait_for_label(*last)
        outcome = self._retrain()
        self._open = []  # the retrain re-scored the pool and refreshed the queue: list it again
        self._print_new_versions(result)
        version = outcome.get("version")
        if outcome.get("skipped"):
            # The service retrains by itself after `retrain_after_labels` new labels, so a request that
            # follows it finds nothing new; the queue to wait for is the one of the model serving now.
            current = self.service.current_model() or {}
            version = current.get("model_version")
            self.say(f"no retrain needed ({outcome['skipped']}); {version or 'no model'} serves")
        if version and more_to_come:
            self._wait_for_queue(str(version))
