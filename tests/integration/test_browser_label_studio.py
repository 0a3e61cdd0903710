"""A person in Label Studio's UI (headless Debian Chromium via Playwright): the label comes back to juicer."""

from __future__ import annotations

import json

import pytest

from annotation.models import ReviewRequest
from annotation.webhooks import check_secret, parse_webhook
from tests.support.browser import ARTIFACTS, chromium, log_in_to_label_studio, loopback_only

pytestmark = [pytest.mark.integration, pytest.mark.browser]

# The keys of the body our LabelStudioDesk.submit_annotation posts (see tests/unit/annotation): the UI must agree.
EDITOR_BODY_KEYS = {"lead_time", "result", "draft_id", "parent_prediction", "parent_annotation", "started_at", "project", "unique_id"}


def test_a_person_corrects_the_model_in_the_browser(label_studio, webhook_receiver):
    secret = "browser-test-secret"
    images = label_studio.images
    with label_studio.desk() as desk:
        project = desk.ensure_project(["cat", "cup", "person"], label_studio.project_title("browser"))
        desk.register_webhook(project, webhook_receiver.url, secret)
        tasks = desk.send_for_review(
            project,
            [
                ReviewRequest("coffee", images["coffee"], "cup", 0.81, "v1"),
                ReviewRequest("chelsea", images["chelsea"], "cat", 0.12, "v1"),  # least certain: served first
                ReviewRequest("astronaut", images["astronaut"], "person", 0.64, "v1"),
            ],
        )
        chelsea_task = next(t.task_id for t in tasks if t.item_id == "chelsea")

        with chromium() as (playwright, browser):
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.set_default_timeout(60_000)
            try:
                loopback_only(page)
                log_in_to_label_studio(page, label_studio.url, label_studio.username, label_studio.password)

                with page.expect_response(lambda r: "/data/local-files/" in r.url) as image_response:
                    page.goto(f"{project.url}?labeling=1")  # "Label All Tasks": the queue's next task
                assert image_response.value.status == 200
                choice = {name: page.locator(f'input.ant-radio-input[name="{name}"]') for name in ("cat", "person")}
                playwright.expect(choice["cat"]).to_be_checked()  # the model's choice, pre-selected
                playwright.expect(choice["person"]).not_to_be_checked()

                page.locator('label:has(input.ant-radio-input[name="person"])').click()
                playwright.expect(choice["person"]).to_be_checked()
                playwright.expect(choice["cat"]).not_to_be_checked()
                page.screenshot(path=str(ARTIFACTS / "label-studio-browser-corrected.png"))  # the test's artefact
                with page.expect_response(lambda r: r.request.method == "POST" and "/annotations" in r.url) as posted:
                    page.click('button[aria-label="Submit current annotation"]')
                response = posted.value
            except Exception:
                page.screenshot(path=str(ARTIFACTS / "label-studio-browser-failed.png"))
                raise

        assert response.status == 201
        assert f"/api/tasks/{chelsea_task}/annotations" in response.url
        body = json.loads(response.request.post_data)
        assert set(body) == EDITOR_BODY_KEYS  # the shape juicer's submit_annotation posts
        assert [r["value"] for r in body["result"]] == [{"choices": ["person"]}]

        events, _ = desk.pull_labels(project)
        emails = desk.annotator_emails()
    assert [(e.item_id, e.label, e.action) for e in events] == [("chelsea", "person", "set")]
    assert emails[events[0].annotator] == label_studio.username
    headers, hook = webhook_receiver.wait_for(lambda b: b.get("action") == "ANNOTATION_CREATED")
    assert check_secret(headers, secret)
    assert [(e.item_id, e.label, e.annotation_id) for e in parse_webhook(hook)] == [("chelsea", "person", events[0].annotation_id)]
