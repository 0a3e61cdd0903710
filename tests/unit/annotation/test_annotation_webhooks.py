"""parse_webhook, verify_event and check_secret on webhook bodies recorded from Label Studio 1.23.2 (payloads/)."""

from __future__ import annotations

import copy
import json
from datetime import datetime, timezone
from pathlib import Path

import pytest

from annotation.errors import EventNotConfirmedError, EventNotServedError, WebhookPayloadError
from annotation.webhooks import (
    LEGACY_UNVERIFIED, SECRET_HEADER, annotation_record, check_secret, parse_webhook, task_record, verify_event,
)  # fmt: skip

PAYLOADS = Path(__file__).parent / "payloads"


def recorded(name: str) -> dict:
    return json.loads((PAYLOADS / f"{name}.json").read_text())


def test_created_annotation_becomes_a_set_event():
    payload = recorded("annotation_created")
    [event] = parse_webhook(payload)
    assert (event.item_id, event.task_id, event.annotation_id) == ("chelsea", payload["task"]["id"], payload["annotation"]["id"])
    assert (event.label, event.action, event.annotator) == ("person", "set", str(payload["annotation"]["completed_by"]))
    assert event.at == datetime.fromisoformat(payload["annotation"]["updated_at"]).astimezone(timezone.utc)


def test_updated_annotation_replaces_the_label_under_the_same_id():
    created, updated = recorded("annotation_created"), recorded("annotation_updated")
    [before], [after] = parse_webhook(created), parse_webhook(updated)
    assert after.annotation_id == before.annotation_id
    assert (before.label, after.label, after.action) == ("person", "cat", "set")
    assert after.at > before.at


def test_skipped_annotation_is_ignored():
    assert parse_webhook(recorded("annotation_created_skipped")) == []


def test_deleted_annotations_are_withdrawn_by_id():
    payload = recorded("annotations_deleted")
    events = parse_webhook(payload)
    assert [(e.annotation_id, e.action, e.item_id, e.label) for e in events] == [
        (a["id"], "withdrawn", None, None) for a in payload["annotations"]
    ]


def test_update_that_empties_an_annotation_withdraws_it():
    payload = copy.deepcopy(recorded("annotation_updated"))
    payload["annotation"]["result"] = []
    [event] = parse_webhook(payload)
    assert (event.action, event.label, event.item_id) == ("withdrawn", None, "chelsea")


def test_empty_created_annotation_is_ignored():
    payload = copy.deepcopy(recorded("annotation_created"))
    payload["annotation"]["result"] = []
    assert parse_webhook(payload) == []


def test_singular_annotation_deleted_withdraws_with_the_item():
    payload = copy.deepcopy(recorded("annotation_created"))
    payload["action"] = "ANNOTATION_DELETED"
    [event] = parse_webhook(payload)
    assert (event.action, event.item_id, event.annotation_id) == ("withdrawn", "chelsea", payload["annotation"]["id"])


def test_tasks_juicer_did_not_create_are_ignored():
    payload = copy.deepcopy(recorded("annotation_created"))
    del payload["task"]["data"]["item_id"]
    assert parse_webhook(payload) == []


def test_other_actions_are_ignored():
    assert parse_webhook({"action": "PROJECT_UPDATED", "project": {"id": 1}}) == []


@pytest.mark.parametrize("body", [{}, {"action": 3}, {"action": "ANNOTATION_CREATED"}, {"action": "ANNOTATIONS_DELETED"}, []])
def test_bodies_that_are_not_events_raise(body):
    with pytest.raises(WebhookPayloadError):
        parse_webhook(body)


def test_check_secret_matches_the_header_in_any_case():
    assert check_secret({SECRET_HEADER: "s3cret-value"}, "s3cret-value")
    assert check_secret({SECRET_HEADER.lower(): "s3cret-value"}, "s3cret-value")
    assert not check_secret({SECRET_HEADER: "s3cret-valuX"}, "s3cret-value")
    assert not check_secret({}, "s3cret-value")
    assert not check_secret({SECRET_HEADER: ""}, "")  # an unset secret never matches


def juicers_link(items: dict[int, str]):
    """``item_of`` over juicer's own task -> item links (tasks it does not serve raise, as the intake's does)."""

    def item_of(annotation):
        if annotation.task_id not in items:
            raise EventNotServedError(f"task {annotation.task_id}: juicer serves no such task")
        return items[annotation.task_id]

    return item_of


def test_every_event_counts_only_as_label_studio_holds_it_on_juicers_own_item():
    payload = recorded("annotation_created")
    held = annotation_record({**payload["annotation"], "result": [
        {"from_name": "label", "to_name": "image", "type": "choices", "value": {"choices": ["cat"]}}
    ]})  # fmt: skip
    link = juicers_link({held.task_id: "juicers-item"})
    [event] = verify_event(payload, {held.id: held}.get, link)
    assert (event.item_id, event.annotation_id, event.label, event.action) == ("juicers-item", held.id, "cat", "set")
    assert event.at == held.at and held.project_id == payload["annotation"]["project"]
    [legacy] = verify_event({**payload, LEGACY_UNVERIFIED: True}, {held.id: held}.get, link)  # bodies recorded before
    assert legacy == event
    with pytest.raises(EventNotConfirmedError):
        verify_event(payload, {}.get, link)  # Label Studio has no such annotation
    moved = annotation_record({**payload["annotation"], "task": payload["annotation"]["task"] + 1})
    with pytest.raises(EventNotConfirmedError):
        verify_event(payload, {moved.id: moved}.get, link)  # not on the task the body claims
    with pytest.raises(EventNotConfirmedError):
        verify_event(payload, None, link)  # no Label Studio to ask
    with pytest.raises(EventNotServedError):
        verify_event(payload, {held.id: held}.get, juicers_link({}))  # a real annotation, on a task juicer does not serve


def test_a_payload_time_in_2099_pins_nothing():
    payload = recorded("annotation_created")
    forged = copy.deepcopy(payload)
    forged["annotation"]["updated_at"] = "2099-01-01T00:00:00Z"
    held = annotation_record(payload["annotation"])
    [event] = verify_event(forged, {held.id: held}.get, juicers_link({held.task_id: "juicers-item"}))
    assert event.at == held.at and event.at.year == 2026


def test_a_task_record_names_its_project_and_item():
    task = task_record({"id": 7, "project": 3, "data": {"item_id": "chelsea", "image": "x"}})
    assert (task.id, task.project_id, task.item_id) == (7, 3, "chelsea")
    assert task_record({"id": 8, "project": {"id": 4}, "data": {}}).item_id is None
    with pytest.raises(WebhookPayloadError):
        task_record({"id": "abc", "project": 3})


def test_a_deletion_without_credentials_counts_for_the_annotations_label_studio_no_longer_has():
    payload = {"action": "ANNOTATIONS_DELETED", "annotations": [{"id": 5}, {"id": 6}]}
    still = annotation_record({"id": 6, "task": 1, "result": [], "completed_by": 1, "updated_at": "2026-12-01T21:00:00Z"})
    [event] = verify_event(payload, {6: still}.get, juicers_link({}))
    assert (event.annotation_id, event.action, event.item_id) == (5, "withdrawn", None)
    with pytest.raises(EventNotConfirmedError):
        verify_event({**payload, "annotations": [{"id": 6}]}, {6: still}.get, juicers_link({}))
