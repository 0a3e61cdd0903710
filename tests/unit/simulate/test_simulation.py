"""The simulation loop against a fake Label Studio desk and a fake service behind httpx.MockTransport."""

import re
from dataclasses import dataclass, replace
from types import SimpleNamespace

import httpx
import pytest

from simulate.command import service_url
from simulate.driver import (
    Clock,
    DatasetTruth,
    ServiceClient,
    ServiceError,
    Simulation,
    SimulationError,
    describe_version,
    poll,
)


class FakeClock(Clock):
    def __init__(self):
        self.t = 0.0
        super().__init__(now=lambda: self.t, sleep=self._sleep)

    def _sleep(self, seconds):
        assert seconds >= 0
        self.t += seconds


@dataclass
class FakeTask:
    item_id: str
    task_id: int
    model_version: str | None
    score: float
    predicted_label: str | None = None


class FakeService:
    """The service's HTTP API over an in-memory state; labels arrive through ``deliver`` (the webhook)."""

    def __init__(self, *, label_delay_polls=0, fail_retrain=False, retrains_by_itself=False):
        self.labels = {}  # item id -> label, as stored
        self.models = [{"model_version": "v0001", "n_labels": 2, "labels_per_class": {"a": 1, "b": 1}, "holdout_accuracy": 0.5, "classes": ["a", "b"]}]
        self.jobs = {}
        self.label_delay_polls = label_delay_polls
        self.pending = {}  # item id -> (label, polls left before it is stored)
        self.retrains_by_itself = retrains_by_itself  # its own retrain came first: requests find nothing new
        self.fail_retrain = fail_retrain
        self.on_retrain = lambda version: None
        self.requests = []

    def deliver(self, item_id, label):
        if self.label_delay_polls:
            self.pending[item_id] = [label, self.label_delay_polls]
        else:
            self.labels[item_id] = label

    def handler(self, request: httpx.Request) -> httpx.Response:
        path, method = request.url.path, request.method
        self.requests.append((method, path, request.headers.get("Authorization")))
        if path == "/v1/models" and method == "GET":
            return httpx.Response(200, json={"models": self.models, "current": self.models[-1]["model_version"]})
        if path == "/v1/models/current":
            return httpx.Response(200, json=self.models[-1])
        if m := re.fullmatch(r"/v1/items/(.+)", path):
            item_id = m.group(1)
            for pending_id, entry in list(self.pending.items()):  # time passes: queued webhook events get processed
                entry[1] -= 1
                if entry[1] <= 0:
                    self.labels[pending_id] = entry[0]
                    del self.pending[pending_id]
            label = self.labels.get(item_id)
            return httpx.Response(200, json={"id": item_id, "label": {"label": label, "source": "label-studio"} if label else None})
        if path == "/v1/retrain" and method == "POST":
            job_id = len(self.jobs) + 1
            self.jobs[job_id] = {"polls": 0}
            return httpx.Response(202, json={"job_id": job_id, "status": "queued"})
        if m := re.fullmatch(r"/v1/jobs/(\d+)", path):
            job = self.jobs[int(m.group(1))]
            job["polls"] += 1
            if job["polls"] < 2:
                return httpx.Response(200, json={"id": int(m.group(1)), "status": "running"})
            if self.fail_retrain:
                return httpx.Response(200, json={"status": "failed", "error": "ValueError: head diverged"})
            if "result" not in job:
                version = f"v{len(self.models) + 1:04d}"
                n = len(self.labels) + 2
                self.models.append({"model_version": version, "n_labels": n, "labels_per_class": {"a": n // 2, "b": n - n // 2}, "holdout_accuracy": 0.5 + n / 100})
                job["result"] = {"version": version, "n_labels": n}
                if self.retrains_by_itself:
                    job["result"] = {"version": None, "n_labels": n, "skipped": "no new labels since the serving model"}
                self.on_retrain(version)
            return httpx.Response(200, json={"status": "done", "result": job["result"]})
        if path == "/v1/report":
            return httpx.Response(200, json={"points": [{"model_version": m["model_version"], "n_labels": m["n_labels"]} for m in self.models]})
        return httpx.Response(404, json={"type": "about:blank", "title": "Not Found", "status": 404, "detail": path})


class FakeDesk:
    """Label Studio's queue: unannotated tasks, lowest score first; a submission goes to the service's webhook."""

    def __init__(self, service, tasks):
        self.service = service
        self.tasks = {t.task_id: t for t in tasks}
        self.submitted = []  # (task id, label)
        self.listings = 0
        self.failures = []  # exceptions the next submissions raise, in order
        self.version = "v0001"  # the project's model version: the one its queue orders by

    def next_task(self, project):
        open_ = self._open()
        return min(open_, key=lambda t: t.score) if open_ else None

    def open_tasks(self, project):
        self.listings += 1
        return self._open()

    def _open(self):
        done = {task_id for task_id, _ in self.submitted}
        return [t for t in self.tasks.values() if t.task_id not in done]

    def submit_annotation(self, task_id, label):
        if self.failures:
            raise self.failures.pop(0)
        self.submitted.append((task_id, label))
        if label is not None:
            self.service.deliver(self.tasks[task_id].item_id, label)
        return len(self.submitted)

    def queue_version(self, project):
        return self.version

    def rescore(self, version):
        for task in self.tasks.values():
            task.model_version = version
        self.version = version


class LockingDesk(FakeDesk):
    """Label Studio 1.23.2's ``/next`` (projects/functions/next_task.py): a /next locks the task it hands out to the
    user and the user's locked task comes first on every later /next until an annotation releases it; only tasks
    with a prediction of the project's model version are ordered by score, and only that version's prediction is
    served. The re-score lands ``delay`` desk calls after the retrain job is done (another process delivers it),
    and turns the order round."""

    def __init__(self, service, tasks, delay):
        super().__init__(service, tasks)
        self.delay = delay
        self.landing = None  # [version, desk calls left]
        self.locked = None
        self.handed_out = []  # task ids /next handed out, in order

    def _tick(self):
        if self.landing is not None:
            self.landing[1] -= 1
            if self.landing[1] <= 0:
                version, self.landing = self.landing[0], None
                for task in self.tasks.values():
                    task.score = 1.0 - task.score
                super().rescore(version)

    def rescore(self, version):
        self.landing = [version, self.delay]

    def next_task(self, project):
        self._tick()
        open_ = self._open()
        if not open_:
            return None
        task = next((t for t in open_ if t.task_id == self.locked), None)
        if task is None:
            current = [t for t in open_ if t.model_version == self.version]
            task = min(current or open_, key=lambda t: t.score)
            self.locked = task.task_id
        self.handed_out.append(task.task_id)
        return replace(task, model_version=task.model_version if task.model_version == self.version else None)

    def queue_version(self, project):
        self._tick()
        return self.version

    def submit_annotation(self, task_id, label):
        if task_id == self.locked:
            self.locked = None
        return super().submit_annotation(task_id, label)


def make(n_tasks=20, order="uncertainty", retrain_every=5, service=None, truth=None, desk_delay=None, **kwargs):
    service = service or FakeService()
    tasks = [FakeTask(f"fm/{i:03d}", 100 + i, "v0001", score=((i * 7) % n_tasks) / n_tasks) for i in range(n_tasks)]
    desk = FakeDesk(service, tasks) if desk_delay is None else LockingDesk(service, tasks, desk_delay)
    service.on_retrain = desk.rescore
    truth = truth or DatasetTruth({t.item_id: "a" if i % 2 else "b" for i, t in enumerate(tasks)})
    lines = []
    client = ServiceClient("http://juicer.test", "tok", transport=httpx.MockTransport(service.handler))
    simulation = Simulation(
        service=client, desk=desk, project=SimpleNamespace(id=1), truth=truth, order=order,
        retrain_every=retrain_every, say=lines.append, clock=FakeClock(), **kwargs,
    )  # fmt: skip
    return simulation, service, desk, lines


def test_uncertainty_order_labels_least_certain_first_and_retrains_every_k():
    simulation, service, desk, lines = make(n_tasks=20, retrain_every=5)
    result = simulation.run(12)
    scores = [desk.tasks[task_id].score for task_id, _ in desk.submitted]
    assert scores == sorted(scores) and len(scores) == 12
    # every label posted is the ground truth
    assert all(label == simulation.truth.label_of(desk.tasks[t].item_id) for t, label in desk.submitted)
    # retrains after 5, 10 and the final 2 labels: the seed version plus three new ones, one line each
    assert [line.split(":")[0] for line in lines] == ["model v0001", "model v0002", "model v0003", "model v0004"]
    assert [v["n_labels"] for v in result.versions] == [2, 7, 12, 14]
    assert result.n_labels == 12 and result.report["points"][-1]["model_version"] == "v0004"
    assert all(auth == "Bearer tok" for _, _, auth in service.requests)


def test_after_a_retrain_the_new_versions_least_certain_task_comes_first_and_the_wait_locks_nothing(caplog):
    """The wait for the re-scored queue reads the project's version, not /next: a /next before the re-score landed
    would lock the old version's least certain task, which Label Studio then hands out first."""
    simulation, _, desk, _ = make(n_tasks=20, retrain_every=5, desk_delay=3)
    simulation.run(6)
    sixth = desk.submitted[5][0]
    open_then = [t for t in desk.tasks.values() if t.task_id not in {task_id for task_id, _ in desk.submitted[:5]}]
    assert desk.tasks[sixth].model_version == "v0002"
    assert sixth == min(open_then, key=lambda t: t.score).task_id  # v0002's least certain, not v0001's
    assert desk.handed_out == [task_id for task_id, _ in desk.submitted]  # every task /next handed out was answered
    assert "going on with the older predictions" not in caplog.text


def test_the_wait_for_the_queue_gives_up_at_its_deadline_and_goes_on(caplog):
    simulation, _, desk, _ = make(n_tasks=20, retrain_every=5, desk_delay=10**6, queue_wait_s=5)
    result = simulation.run(6)
    assert result.n_labels == 6 and "review tasks scored by v0002" in caplog.text
    assert desk.handed_out == [task_id for task_id, _ in desk.submitted]


def test_with_no_open_task_left_the_simulator_does_not_wait_for_a_re_score(caplog):
    simulation, _, desk, _ = make(n_tasks=10, retrain_every=5, desk_delay=10**6, queue_wait_s=5)
    result = simulation.run(15)  # more than the pool holds
    assert result.n_labels == 10 and not desk._open()
    assert caplog.text.count("going on with the older predictions") == 1  # after 5 labels; none once all are done


def test_a_retrain_the_service_already_made_is_not_asked_for_twice():
    simulation, service, _, lines = make(service=FakeService(retrains_by_itself=True), retrain_every=3)
    result = simulation.run(6)
    assert [v["model_version"] for v in result.versions] == ["v0001", "v0002", "v0003"]
    assert sum("no retrain needed" in line for line in lines) == 2
    assert any("v0002 serves" in line for line in lines)


def test_random_order_picks_open_tasks_at_random_reproducibly():
    first, _, desk_a, _ = make(order="random", seed=3)
    first.run(10)
    second, _, desk_b, _ = make(order="random", seed=3)
    second.run(10)
    order_a = [t for t, _ in desk_a.submitted]
    assert order_a == [t for t, _ in desk_b.submitted]
    by_score = sorted(desk_a.tasks.values(), key=lambda t: t.score)
    assert order_a != [t.task_id for t in by_score[:10]]
    assert len(set(order_a)) == 10
    assert desk_a.listings == 2  # listed once per round (retrain every 5), not once per label


def test_waits_for_the_webhook_before_retraining():
    service = FakeService(label_delay_polls=3)
    simulation, service, _, _ = make(service=service, retrain_every=4)
    result = simulation.run(4)
    assert result.versions[-1]["n_labels"] == 6  # the new version saw all 4 labels (+2 seed)


def test_a_label_that_never_arrives_stops_with_a_clear_error():
    service = FakeService(label_delay_polls=10**6)
    simulation, _, _, _ = make(service=service, retrain_every=2, label_wait_s=5)
    with pytest.raises(SimulationError, match="store the label"):
        simulation.run(2)


def test_failed_retrain_is_reported():
    simulation, _, _, _ = make(service=FakeService(fail_retrain=True), retrain_every=2)
    with pytest.raises(SimulationError, match="head diverged"):
        simulation.run(2)


def test_items_outside_the_ground_truth_are_skipped():
    simulation, _, desk, _ = make(n_tasks=6, truth=DatasetTruth({"fm/003": "a", "fm/004": "b", "fm/005": "a"}), retrain_every=10)
    result = simulation.run(3)
    assert result.n_labels == 3 and result.n_skipped == 3
    assert sorted(label for _, label in desk.submitted if label) == ["a", "a", "b"]
    assert sum(1 for _, label in desk.submitted if label is None) == 3


def test_empty_queue_stops_early_after_training_on_what_was_labelled():
    simulation, _, _, lines = make(n_tasks=3, retrain_every=10, queue_wait_s=2)
    result = simulation.run(10)
    assert result.n_labels == 3
    assert result.versions[-1]["n_labels"] == 5
    assert any("queue is empty" in line for line in lines)


class FlakyError(Exception):
    """Like annotation.errors.AnnotationError: says whether a retry can help, and the HTTP status."""

    def __init__(self, message, retryable, status=None):
        super().__init__(message)
        self.retryable = retryable
        self.status = status


def test_retryable_desk_errors_are_retried_like_a_person_reloading():
    simulation, _, desk, _ = make(retrain_every=10)
    desk.failures = [FlakyError("500: FOREIGN KEY constraint failed", True), FlakyError("timed out", True)]
    result = simulation.run(3)
    assert result.n_labels == 3 and len(desk.submitted) == 3 and desk.failures == []


def test_a_parent_prediction_replaced_mid_submit_is_retried():
    simulation, _, desk, _ = make(retrain_every=10)
    desk.failures = [FlakyError('400: Validation error {"parent_prediction": ["Invalid pk \\"365\\""]}', False, status=400)]
    assert simulation.run(2).n_labels == 2 and desk.failures == []


def test_errors_that_a_retry_cannot_fix_stop_the_run():
    simulation, _, desk, _ = make(retrain_every=10)
    desk.failures = [FlakyError("401: token is wrong", False)]
    with pytest.raises(FlakyError, match="token"):
        simulation.run(3)


def test_retries_give_up_after_the_limit():
    simulation, _, desk, _ = make(retrain_every=10, desk_retries=2)
    desk.failures = [FlakyError("timed out", True)] * 3
    with pytest.raises(FlakyError):
        simulation.run(1)


def test_rejects_bad_arguments():
    with pytest.raises(ValueError):
        make(order="alphabetical")
    with pytest.raises(ValueError):
        make(retrain_every=0)


def test_service_client_turns_problems_into_service_errors():
    def handler(request):
        if request.url.path == "/v1/models/current":
            return httpx.Response(503, json={"title": "No model yet", "status": 503, "detail": "no model has been trained"})
        return httpx.Response(401, json={"title": "Unauthorized", "status": 401, "detail": "the API token is wrong"})

    client = ServiceClient("http://juicer.test", "bad", transport=httpx.MockTransport(handler))
    assert client.current_model() is None
    with pytest.raises(ServiceError) as excinfo:
        client.retrain()
    assert excinfo.value.status == 401 and "token is wrong" in str(excinfo.value) and "api_token" in str(excinfo.value)


def test_service_client_says_when_the_service_is_down():
    def handler(request):
        raise httpx.ConnectError("connection refused", request=request)

    client = ServiceClient("http://127.0.0.1:9", transport=httpx.MockTransport(handler))
    with pytest.raises(ServiceError, match="juicer serve"):
        client.report()


def test_poll_gives_up_at_the_deadline_without_real_sleeps():
    clock = FakeClock()
    calls = []
    with pytest.raises(SimulationError, match="10 s waiting for the moon"):
        poll(lambda: calls.append(1), deadline_s=10, what="the moon", clock=clock)
    assert 10 <= clock.t <= 12 and len(calls) > 3


def test_describe_version():
    line = describe_version({"model_version": "v0003", "n_labels": 40, "labels_per_class": {str(i): 4 for i in range(10)}, "holdout_accuracy": 0.7123})
    assert line == "model v0003: 40 labels (4.0/class), holdout accuracy 71.2%"
    assert "n/a" in describe_version({"model_version": "v1", "n_labels": 0, "holdout_accuracy": None})


def test_service_url_from_settings():
    service = SimpleNamespace(public_url=None, host="0.0.0.0", port=8123)
    assert service_url(SimpleNamespace(service=service)) == "http://127.0.0.1:8123"
    service.public_url = "http://juicer:8000"
    assert service_url(SimpleNamespace(service=service)) == "http://juicer:8000"


def test_truth_from_a_dataset():
    import numpy as np

    from learner.datasets import Dataset
    from learner.images import ArrayImage

    pixels = np.zeros((4, 4), dtype=np.uint8)
    dataset = Dataset(
        name="tiny", class_names=["shirt", "bag"], sources=[ArrayImage(pixels, "x/1"), ArrayImage(pixels, "x/2")],
        labels=np.array([1, 0]), item_ids=["x/1", "x/2"],
    )  # fmt: skip
    truth = DatasetTruth.from_dataset(dataset)
    assert truth.label_of("x/1") == "bag" and truth.label_of("x/2") == "shirt" and truth.label_of("x/3") is None


def test_a_noisy_annotator_posts_wrong_labels_at_its_rate_and_takes_the_wrong_guess():
    from learner.noise import NoisyAnnotator

    n = 300
    simulation, _, desk, _ = make(n_tasks=n, retrain_every=1000, annotator=NoisyAnnotator(0.3, accept_guess=1.0, seed=5),
                                  classes=["a", "b", "c"])
    for task in desk.tasks.values():  # every task shows a wrong guess pre-selected; some show none
        truth = simulation.truth.label_of(task.item_id)
        task.predicted_label = None if task.task_id % 3 == 0 else ("c" if truth != "c" else "a")
    result = simulation.run(n)
    wrong = [(t, label) for t, label in desk.submitted if label != simulation.truth.label_of(desk.tasks[t].item_id)]
    assert result.n_wrong == len(wrong)
    assert abs(len(wrong) - 0.3 * n) <= 4 * (n * 0.3 * 0.7) ** 0.5  # within binomial noise
    # accept 1.0: every error on a task with a guess is that guess; with none, another class
    assert all(label == desk.tasks[t].predicted_label for t, label in wrong if desk.tasks[t].predicted_label)
    assert result.n_took_guess == sum(1 for t, _ in wrong if desk.tasks[t].predicted_label)


def test_a_noisy_annotator_needs_the_classes():
    from learner.noise import NoisyAnnotator

    with pytest.raises(ValueError, match="classes"):
        make(annotator=NoisyAnnotator(0.1))


def test_truth_from_a_folder_names_the_items_an_unlabelled_import_makes(tmp_path):
    from app.core.imports import import_images, walk
    from app.store import Store
    from tests.support.images import png

    root = tmp_path / "photos"
    for name, colour in (("cat", (200, 40, 40)), ("cup", (40, 40, 200))):
        (root / name).mkdir(parents=True)
        for i in range(3):
            (root / name / f"{i}.png").write_bytes(png(colour, seed=i))
    (root / "cat" / "notes.txt").write_text("not a picture\n")
    store = Store.open(tmp_path / "data")
    try:
        summary = import_images(walk([str(root)], labelled=False, max_bytes=100_000), store=store,
                                data_dir=tmp_path / "data", max_pixels=1_000_000, embed=None)  # fmt: skip
        imported = {row.id for row in store.items_of_split("pool")}
    finally:
        store.close()
    truth = DatasetTruth.from_folder(root)
    assert summary.imported == 6 and set(truth.labels) == imported
    assert sorted(truth.labels.values()) == ["cat"] * 3 + ["cup"] * 3
    assert truth.label_of(next(iter(imported))) in ("cat", "cup") and truth.label_of("img-unknown") is None

