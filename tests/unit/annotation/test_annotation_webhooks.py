"""parse_webhook, verify_event and check_secret on webhook bodies recorded from Label Studio 1.23.2 (payloads/)."""

from __future__ import annotations

import copy
import json
from datetime import datetime, timezone
from pathlib import Path

import pytest

from annotation.errors import EventNotConfirmedError, WebhookPayloadError
from annotation.webhooks import SECRET_HEADER, UNVERIFIED, annotation_record, check_secret, parse_webhook, verify_event

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


def test_an_event_with_credentials_is_parsed_as_it_came():
    payload = recorded("annotation_created")
    assert verify_event(payload, None) == parse_webhook(payload)


def test_an_event_without_credentials_counts_only_as_label_studio_holds_it():
    payload = recorded("annotation_created")
    held = annotation_record({**payload["annotation"], "result": [
        {"from_name": "label", "to_name": "image", "type": "choices", "value": {"choices": ["cat"]}}
    ]})  # fmt: skip
    [event] = verify_event({**payload, UNVERIFIED: True}, {held.id: held}.get)
    assert (event.item_id, event.annotation_id, event.label, event.action) == ("chelsea", held.id, "cat", "set")
    with pytest.raises(EventNotConfirmedError):
        verify_event({**payload, UNVERIFIED: True}, {}.get)  # Label Studio has no such annotation
    moved = annotation_record({**payload["annotation"], "task": payload["annotation"]["task"] + 1})
    with pytest.raises(EventNotConfirmedError):
        verify_event({**payload, UNVERIFIED: True}, {moved.id: moved}.get)  # not on the task the body claims
    with pytest.raises(EventNotConfirmedError):
        verify_event({**payload, UNVERIFIED: True}, None)  # no Label Studio to ask


def test_a_deletion_without_credentials_counts_for_the_annotations_label_studio_no_longer_has():
    payload = {"action": "ANNOTATIONS_DELETED", "annotations": [{"id": 5}, {"id": 6}], UNVERIFIED: True}
    still = annotation_record({"id": 6, "task": 1, "result": [], "completed_by": 1, "updated_at": "2026-12-01T21:00:00Z"})
    [event] = verify_event(payload, {6: still}.get)
    assert (event.annotation_id, event.action) == (5, "withdrawn")
    with pytest.raises(EventNotConfirmedError):
        verify_event({**payload, "annotations": [{"id": 6}]}, {6: still}.get)
