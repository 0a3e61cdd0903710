"""End to end on photos juicer did not ship with (issue 19): a folder imported with no labels, a holdout labelled
blind, simulated annotators through the real Label Studio, and the report, forecast and gallery in Chromium.

A folder of real photos laid out ``<class>/<image>`` (``scripts/make_photo_folder.py``: crops of scikit-image's
photographs, not Fashion-MNIST) is served as a user does, ``juicer serve --images DIR --classes a,b,...`` (a real
subprocess on the session's Label Studio): imported unlabelled, juicer reserves a holdout from the pool and sends
its tasks blind. Annotators played from the folder's class names (:meth:`simulate.driver.DatasetTruth.from_folder`)
take Label Studio's own stream ("Label All Tasks", Uncertainty sampling), and answer as the editor does, asking for
a retrain every K labels.

Label Studio's Uncertainty sampling serves only tasks holding a prediction of the project's model version while any
exist, lowest score first: blind tasks with no prediction at all waited behind every active pick and the holdout
never filled (found by this test: 0 of 40 labels reached it). juicer now gives blind tasks an empty placeholder
prediction of the current version scored below every guess (:mod:`annotation.reviews`), so the stream serves them
first, nothing pre-selected; this test drives the stream itself to show it.

``make test`` runs a short version (5 classes x 24 photos, 0 -> 40 labels, a retrain every 10, holdout minimum 10).
``JUICER_TEST_E2E_LABELS=200`` runs the full one (10 classes x 50 photos, 0 -> 200 labels, a retrain every 20, the
default holdout settings).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from annotation.reviews import BLIND_SCORE

from config.settings import HoldoutSettings
from simulate.driver import DatasetTruth, ServiceClient, Simulation
from tests.support.browser import ARTIFACTS, chromium, log_in_to_label_studio, loopback_only
from tests.support.served import REPO, ServedJuicer, data_folder, service_env
from tests.support.wait import poll

pytestmark = [pytest.mark.integration, pytest.mark.browser]



@dataclass(frozen=True)
class Scale:
    """How big a run is: the folder, the labels the annotators give, how often they ask for a retrain."""

    n_labels: int
    n_classes: int
    per_class: int
    retrain_every: int
    holdout_min_labels: int | None  # None: the default setting (service.holdout.min_labels)

    @classmethod
    def from_env(cls) -> "Scale":
        n_labels = int(os.environ.get("JUICER_TEST_E2E_LABELS", "40"))
        if n_labels <= 60:  # make test: under ~4 minutes alone on a 2-core machine
            return cls(n_labels, n_classes=5, per_class=24, retrain_every=10, holdout_min_labels=10)
        return cls(n_labels, n_classes=10, per_class=50, retrain_every=20, holdout_min_labels=None)


SCALE = Scale.from_env()


@dataclass
class World:
    service: ServedJuicer
    photos: Path
    classes: list[str]
    truth: DatasetTruth
    title: str
    started: float
    min_labels: int


def open_to_annotators(url: str) -> bool:
    """Whether the service answers and has its store and Label Studio: what annotators need. (``/readyz`` waits
    for a model too, and a folder imported with no labels has none until the annotators' first answers.)"""
    try:
        checks = httpx.get(f"{url}/readyz", timeout=5).json().get("checks") or {}
    except (httpx.HTTPError, ValueError):
        return False
    return bool(checks.get("store") and checks.get("label_studio"))


def _record(lines: list[str]) -> None:
    """The run's figures, for the closing note (``test-artifacts/own-photos.txt``)."""
    ARTIFACTS.mkdir(exist_ok=True)
    with (ARTIFACTS / "own-photos.txt").open("a") as out:
        for line in lines:
            out.write(f"{time.strftime('%H:%M:%S')} {line}\n")


@pytest.fixture(scope="module")
def world(tmp_path_factory, free_port, label_studio) -> World:
    started = time.monotonic()
    photos = tmp_path_factory.mktemp("own-photos") / "photos"
    made = subprocess.run(
        [sys.executable, "scripts/make_photo_folder.py", str(photos), "--classes", str(SCALE.n_classes),
         "--per-class", str(SCALE.per_class), "--seed", "3"],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    classes = sorted(p.name for p in photos.iterdir() if p.is_dir())
    # Label Studio serves local files only under its document root: the data folder lives there.
    data_dir = data_folder(label_studio.files_root.parent / f"own-photos-{label_studio.project_title('d').split()[-1]}")
    # Label Studio serves <document root>/images, the session's files_root: juicer's images folder is that one,
    # as when juicer starts Label Studio itself on its own data folder.
    (data_dir / "files").mkdir()
    (data_dir / "files" / "images").symlink_to(label_studio.files_root, target_is_directory=True)
    port = free_port()
    title = label_studio.project_title("own photos")
    extra = {"JUICER_SERVICE__RETRAIN_AFTER_LABELS": "100000",  # only the annotators' retrains, at known label counts
             "JUICER_SERVICE__REVIEW_BATCH_SIZE": "20", "JUICER_SERVICE__GALLERY_SIZE": "24"}
    if SCALE.holdout_min_labels is not None:
        extra["JUICER_SERVICE__HOLDOUT__MIN_LABELS"] = str(SCALE.holdout_min_labels)
    env = service_env(data_dir, port, label_studio, title, **extra)
    # The one-line start on your own folder: import (no labels), then serve.
    service = ServedJuicer(data_dir, port, env, args=["--images", str(photos), "--classes", ",".join(classes)],
                           ready=open_to_annotators)  # fmt: skip
    service.start(timeout_s=300)
    try:
        min_labels = SCALE.holdout_min_labels or HoldoutSettings().min_labels
        _record([f"== {SCALE}: folder made, imported and served in {time.monotonic() - started:.0f} s "
                 f"(load {os.getloadavg()[0]:.1f})"])  # fmt: skip
        yield World(service, photos, classes, DatasetTruth.from_folder(photos), title, started, min_labels)
    finally:
        service.stop()


def _project(world: World, desk):
    return desk.ensure_project(world.classes, world.title)  # the service's own project (found by its title)


def test_the_folder_comes_in_unlabelled_and_a_holdout_is_reserved_and_sent_blind(world, label_studio):
    n_images = SCALE.n_classes * SCALE.per_class
    with world.service.client() as client:
        counts = client.get("/v1/items", params={"limit": 1}).json()["counts"]
        assert client.get("/v1/models").json()["models"] == []  # no labels: no model yet
    assert len(world.truth.labels) == n_images
    assert counts.get("seed", 0) == 0 and counts["pool"] + counts["holdout"] == n_images
    assert counts["holdout"] == min(20 * SCALE.n_classes, int(0.2 * n_images))  # 20 per class, at most 20% of the pool

    with label_studio.desk() as desk:
        project = _project(world, desk)
        tasks = world.service.wait_for(lambda: desk.open_tasks(project), 120, "the first tasks in Label Studio")
    blind = [t for t in tasks if _split(world, t.item_id) == "holdout"]
    assert len(blind) >= min(world.min_labels, counts["holdout"])  # the holdout first, until its minimum is in
    assert all(t.predicted_label is None for t in blind)  # nothing pre-selected
    assert {t.score for t in blind} == {BLIND_SCORE}  # below every other task's: Label Studio's stream serves them first
    assert {world.truth.label_of(t.item_id) for t in tasks} <= set(world.classes)  # every task is one of the photos


def test_annotators_label_through_label_studio_and_every_version_is_measured_on_the_holdout(world, label_studio):
    started = time.monotonic()
    lines: list[str] = []
    with label_studio.desk(timeout_s=30) as desk:
        service = ServiceClient(world.service.url, world.service.token, timeout_s=60)
        try:
            simulation = Simulation(
                service=service, desk=desk, project=_project(world, desk), truth=world.truth, order="uncertainty",
                retrain_every=SCALE.retrain_every, seed=0, label_wait_s=120, retrain_wait_s=300, queue_wait_s=60,
                say=lines.append,
            )  # fmt: skip
            result = simulation.run(SCALE.n_labels)
        finally:
            service.close()
    elapsed = time.monotonic() - started
    points = result.report["points"]
    table = [f"{p['model_version']}: {p['n_labels']} training labels, holdout n={p['holdout_n']}, accuracy "
             + ("n/a" if p["holdout_accuracy"] is None else f"{p['holdout_accuracy']:.3f}")
             + (f" [{p['accuracy_interval'][0]:.3f}, {p['accuracy_interval'][1]:.3f}]" if p.get("accuracy_interval") else "")
             + (" (holdout too small to measure)" if p["holdout_too_small"] else "")
             for p in points]  # fmt: skip
    _record([*lines, *table, f"{result.n_labels} labels through Label Studio, {len(points)} versions in {elapsed:.0f} s "
             f"(load {os.getloadavg()[0]:.1f}); whole run so far {time.monotonic() - world.started:.0f} s"])  # fmt: skip

    assert result.n_labels == SCALE.n_labels and result.n_skipped == 0
    newest_n = points[-1]["holdout_n"]
    assert newest_n >= world.min_labels and not points[-1]["holdout_too_small"]  # the holdout filled, blind
    checks = result.report.get("label_checks") or {}
    second_looks = (checks.get("second_look_status") or {}).get("labelled", 0)  # another answer on a labelled item
    # every label trains, measures or settles a suspected label (one budget), never two of them
    assert points[-1]["n_labels"] + newest_n + second_looks == SCALE.n_labels
    assert len(points) >= 2 and [p["n_labels"] for p in points] == sorted({p["n_labels"] for p in points})
    assert all(p["holdout_n"] == newest_n for p in points)  # every version re-measured on the current holdout
    for p in points:
        low, high = p["accuracy_interval"]
        assert low <= p["holdout_accuracy"] <= high
    assert points[-1]["holdout_accuracy"] >= 2 / SCALE.n_classes  # well above chance on photos it never shipped with


@pytest.fixture
def browser():
    with chromium() as (playwright, launched):
        yield playwright, launched


def _split(world, item_id: str) -> str:
    """The item's split as the service holds it (``holdout`` for the blind tasks)."""
    with world.service.client() as client:
        return client.get(f"/v1/items/{item_id}").json()["split"]


def test_a_holdout_task_shows_no_guess_in_label_studio_and_an_active_pick_does(world, label_studio, browser):
    playwright, launched = browser

    def open_tasks() -> tuple | None:
        """An open holdout task and an open task with a guess. The annotators may have just answered every open
        holdout task: the last refresh queues more (service.holdout.share of a batch), delivered by the outbox."""
        with label_studio.desk() as desk:
            tasks = desk.open_tasks(_project(world, desk))
        blind = next((t for t in tasks if _split(world, t.item_id) == "holdout"), None)
        guessed = next((t for t in tasks if t.predicted_label is not None), None)
        return (blind, guessed) if blind is not None and guessed is not None else None

    blind, guessed = poll(open_tasks, timeout_s=90, what="an open holdout task and an open task with a guess",
                          interval_s=2)
    with label_studio.desk() as desk:
        project = _project(world, desk)
    assert blind.predicted_label is None  # an empty placeholder at most: nothing pre-selected
    page = launched.new_page(viewport={"width": 1400, "height": 900})
    page.set_default_timeout(60_000)
    loopback_only(page)
    try:
        log_in_to_label_studio(page, label_studio.url, label_studio.username, label_studio.password)

        choices = page.locator("input.ant-radio-input")
        with page.expect_response(lambda r: "/data/local-files/" in r.url) as image_response:
            page.goto(f"{project.url}?task={blind.task_id}")
        assert image_response.value.status == 200  # the photo itself is shown
        playwright.expect(choices).to_have_count(len(world.classes))
        for name in world.classes:
            playwright.expect(page.locator(f'input.ant-radio-input[name="{name}"]')).not_to_be_checked()
        page.screenshot(path=str(ARTIFACTS / "own-photos-holdout-task.png"))

        page.goto(f"{project.url}?task={guessed.task_id}")
        playwright.expect(page.locator(f'input.ant-radio-input[name="{guessed.predicted_label}"]')).to_be_checked()
        playwright.expect(page.locator("input.ant-radio-input:checked")).to_have_count(1)  # the guess alone
        page.screenshot(path=str(ARTIFACTS / "own-photos-active-pick.png"))
    except Exception:
        page.screenshot(path=str(ARTIFACTS / "own-photos-label-studio-failed.png"))
        raise


def test_the_report_forecast_and_gallery_of_your_own_photos_in_a_browser(world, browser):
    playwright, launched = browser
    url = world.service.url
    assert httpx.get(f"{url}/report", timeout=30).status_code == 401  # your photos' results need the token
    with world.service.client() as client:
        points = client.get("/v1/report").json()["points"]
        forecast = client.get("/v1/forecast").json()
    newest = points[-1]
    errors: list[str] = []
    page = launched.new_page(viewport={"width": 1200, "height": 900}, http_credentials={"username": "me", "password": world.service.token})
    page.set_default_timeout(30_000)
    page.on("pageerror", lambda error: errors.append(str(error)))
    loopback_only(page)
    try:
        page.goto(f"{url}/report")
        rows = page.locator("#versions tbody tr")
        playwright.expect(rows).to_have_count(len(points))
        last = rows.last.locator("td").all_text_contents()
        assert last[0] == newest["model_version"] and last[2] == str(newest["n_labels"])
        assert last[4] == str(newest["holdout_n"]) and last[5] == f"{100 * newest['holdout_accuracy']:.1f}%"
        assert page.locator("#per-class tbody tr").all_text_contents()[0].startswith(world.classes[0])
        assert page.locator("img.plot").evaluate("img => img.naturalWidth") == 800
        page.screenshot(path=str(ARTIFACTS / "own-photos-report.png"), full_page=True)

        headline = page.locator("#forecast-headline")
        playwright.expect(headline).to_be_visible()
        if forecast["refused"]:  # a short run has few versions: the page says why there is no forecast
            playwright.expect(headline).to_contain_text(f"No forecast: {forecast['refused']}")
        else:
            playwright.expect(headline).to_contain_text("more labels -> expected")
        plot = page.locator("img.plot").bounding_box()
        page.screenshot(path=str(ARTIFACTS / "own-photos-forecast.png"),
                        clip={"x": 0, "y": 0, "width": 1200, "height": plot["y"] + plot["height"] + 10})  # fmt: skip

        page.goto(f"{url}/gallery")
        captions = page.locator("#gallery figcaption")
        playwright.expect(captions).to_have_count(min(24, newest["holdout_n"]))
        playwright.expect(page.locator("#version-summary")).to_contain_text(newest["model_version"])
        shown = " ".join(captions.all_text_contents())
        assert any(name in shown for name in world.classes)  # captioned with your classes, not Fashion-MNIST's
        assert page.locator("#gallery figure.wrong").count() < captions.count()  # the newest version gets some right
        page.screenshot(path=str(ARTIFACTS / "own-photos-gallery.png"), full_page=True)
    except Exception:
        page.screenshot(path=str(ARTIFACTS / "own-photos-pages-failed.png"))
        raise
    assert errors == []
    _record([f"browser checks done; whole test {time.monotonic() - world.started:.0f} s (load {os.getloadavg()[0]:.1f})"])
