"""The forecast, the report page and the gallery through a running juicer (real backbone, real Fashion-MNIST),
and the same pages in headless Chromium (Playwright): they render, the stepper re-captions, no console errors.

One service for the module: the demo split (1 label per class, a pool, a holdout of 200), then labels from
the pool posted through ``POST /v1/labels`` and a retrain after each batch, so there are six versions.
"""

from __future__ import annotations

import io
import threading
from pathlib import Path

import httpx
import pytest
from PIL import Image

from tests.support.browser import ARTIFACTS, chromium, loopback_only

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
BATCHES = (10, 20, 40, 80, 150)  # labels added before each retrain after the first model


TOKEN = "pages-token-123"  # /v1/* and the pages need a token (a generated one when unset)
AUTH = {"Authorization": f"Bearer {TOKEN}"}
BROWSER_LOGIN = {"username": "juicer", "password": TOKEN}  # what a person types into the browser's prompt


@pytest.fixture(scope="module")
def served(tmp_path_factory, free_port, backbone):
    """A juicer HTTP server on a free port with six model versions; yields its base URL and services."""
    from werkzeug.serving import make_server

    from app import create_app
    from app.core.demo import seed_demo
    from app.services import build_services
    from app.store import Store
    from config import load_settings
    from learner.datasets import load_fashion_mnist

    data_dir = tmp_path_factory.mktemp("pages") / "data"
    data_dir.mkdir()
    shared = REPO / "data" / "embeddings"
    if shared.is_dir():  # the shared embedding cache (safe for concurrent writers): no image embedded twice
        (data_dir / "embeddings").symlink_to(shared.resolve(), target_is_directory=True)
    dataset = load_fashion_mnist("/usr/share/datasets/fashion-mnist", per_class_limit=60, seed=4)
    port = free_port()
    settings = load_settings(
        environ={}, data_dir=data_dir,
        service={"port": port, "retrain_after_labels": 100000, "gallery_size": 40, "api_token": TOKEN},
        label_studio={"url": "http://127.0.0.1:9", "webhook_secret": "pages-secret-123"},
    )
    store = Store.open(data_dir)
    store.set_meta("classes", list(dataset.class_names))
    seed_demo(store, data_dir, dataset, n_pool=320, n_holdout=200, seed=6)
    services = build_services(settings, store=store, backbone=backbone)
    app = create_app(services=services)
    http = make_server("127.0.0.1", port, app, threaded=True)
    threading.Thread(target=http.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{port}"
    truth = dict(zip(dataset.item_ids, dataset.label_names))
    try:
        assert services.trainer.retrain(reason="first", refresh_queue=False).version == "v0001"
        pool = [row.id for row in store.items_of_split("pool")]
        start = 0
        with httpx.Client(base_url=url, timeout=60, headers=AUTH) as client:
            for size in BATCHES:
                labels = [{"item_id": item_id, "label": truth[item_id]} for item_id in pool[start:start + size]]
                start += size
                response = client.post("/v1/labels", json={"labels": labels})
                assert response.status_code == 201, response.text
                assert services.trainer.retrain(reason="test", refresh_queue=False).version is not None
        yield url, services
    finally:
        http.shutdown()
        store.close()


def test_the_forecast_through_the_service(served):
    url, services = served
    body = httpx.get(f"{url}/v1/forecast", params={"target": 0.9}, timeout=60, headers=AUTH).json()
    assert [p["n_labels"] for p in body["points"]] == [10, 20, 40, 80, 160, 310]
    assert body["backtest_error"] is not None
    assert 0.9 in [t["target"] for t in body["targets"]]
    if body["refused"] is None:
        assert body["curve"]["n_labels"][-1] == pytest.approx(4 * 310)
        assert body["next"] and "more labels -> expected" in body["next"][0]["words"]
    else:
        assert body["curve"] is None and body["refused"]
    points = httpx.get(f"{url}/v1/report", timeout=60, headers=AUTH).json()["points"]
    assert all(p["accuracy_interval"][0] <= p["holdout_accuracy"] <= p["accuracy_interval"][1] for p in points)
    assert all(p["precision_rule"]["n_holdout"] == 200 for p in points)
    assert points[-1]["holdout_accuracy"] > points[0]["holdout_accuracy"]


def test_the_pages_and_the_animation_through_the_service(served):
    url, services = served
    calls = services.embeddings.backbone.calls
    login = httpx.BasicAuth(BROWSER_LOGIN["username"], TOKEN)
    report = httpx.get(f"{url}/report", timeout=60, auth=login)
    assert report.status_code == 200 and 'id="confusion"' in report.text and "v0006" in report.text
    gallery = httpx.get(f"{url}/gallery", timeout=60, auth=login)
    assert gallery.status_code == 200 and gallery.text.count("<figure") == 40
    gif = httpx.get(f"{url}/gallery.gif", timeout=60, headers=AUTH)
    with Image.open(io.BytesIO(gif.content)) as animation:
        assert animation.n_frames == 6
    assert services.embeddings.backbone.calls == calls  # never the backbone


def test_the_pages_are_private_but_health_is_not(served):
    url, _ = served
    for path in ("/report", "/report.png", "/gallery", "/gallery.gif", "/metrics"):
        refused = httpx.get(f"{url}{path}", timeout=60)
        assert refused.status_code == 401 and refused.headers["WWW-Authenticate"] == 'Basic realm="juicer"', path
    for path in ("/healthz", "/openapi.json"):
        assert httpx.get(f"{url}{path}", timeout=60).status_code == 200, path


@pytest.mark.browser
def test_report_and_gallery_in_a_browser(served):
    url, _ = served
    errors: list[str] = []
    with chromium() as (playwright, browser):
        # The browser answers the pages' Basic challenge as a person would at its prompt (Playwright sends the
        # login only after a 401 with the challenge, so the challenge is what opens the pages here).
        page = browser.new_page(viewport={"width": 390, "height": 844}, device_scale_factor=2,  # a phone
                                http_credentials=BROWSER_LOGIN)
        page.set_default_timeout(30_000)
        page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
        page.on("pageerror", lambda error: errors.append(str(error)))
        loopback_only(page)
        try:
            stranger = browser.new_page()  # no login: the browser is challenged and shows nothing of the page
            with pytest.raises(playwright.Error, match="ERR_INVALID_AUTH_CREDENTIALS"):
                stranger.goto(f"{url}/report")
            stranger.close()
            page.goto(f"{url}/report")
            playwright.expect(page.locator("#forecast-headline")).to_be_visible()
            playwright.expect(page.locator("#confusion")).to_be_visible()
            assert page.locator("img.plot").evaluate("img => img.naturalWidth") == 800
            # readable on a phone: the page itself does not scroll sideways (wide tables scroll in their box)
            assert page.evaluate("document.documentElement.scrollWidth") <= 390
            page.screenshot(path=str(ARTIFACTS / "report-phone.png"), full_page=True)

            page.goto(f"{url}/gallery?version=v0001")
            captions = page.locator("#gallery figcaption")
            playwright.expect(captions).to_have_count(40)
            first = captions.all_text_contents()
            summary = page.locator("#version-summary").text_content()
            assert summary.startswith("v0001: 10 labels")
            page.screenshot(path=str(ARTIFACTS / "gallery-v0001.png"), full_page=True)
            for _ in range(5):
                page.click("#next")
            playwright.expect(page.locator("#version-summary")).to_contain_text("v0006")
            last = captions.all_text_contents()
            assert last != first  # the stepper re-captioned the same images
            assert page.locator("#gallery figure.wrong").count() < 40  # some guesses are right under the last version
            page.screenshot(path=str(ARTIFACTS / "gallery-v0006.png"), full_page=True)
            page.fill("#version-slider", "0")
            playwright.expect(page.locator("#version-summary")).to_contain_text("v0001")
            assert captions.all_text_contents() == first
        except Exception:
            page.screenshot(path=str(ARTIFACTS / "pages-browser-failed.png"))
            raise
    assert errors == []
