"""Generated webhook bodies through the parser: label events or a WebhookPayloadError, never another exception."""

from __future__ import annotations

import json
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from annotation.errors import WebhookPayloadError
from annotation.models import LabelEvent
from annotation.webhooks import parse_webhook

PAYLOADS = sorted((Path(__file__).parent / "payloads").glob("*.json"))
REAL = [json.loads(path.read_text()) for path in PAYLOADS]

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=20,
)


def _parses_or_refuses(payload) -> None:
    try:
        events = parse_webhook(payload)
    except WebhookPayloadError:
        return
    assert isinstance(events, list) and all(isinstance(event, LabelEvent) for event in events)


@settings(max_examples=300, deadline=None)
@given(json_values)
def test_any_json_value_is_parsed_or_refused(payload):
    _parses_or_refuses(payload)


def _paths(value, prefix=()):
    yield prefix
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _paths(item, prefix + (key,))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _paths(item, prefix + (index,))


def _replace(value, path, new):
    if not path:
        return new
    copy = dict(value) if isinstance(value, dict) else list(value)
    copy[path[0]] = _replace(value[path[0]], path[1:], new)
    return copy


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(REAL), st.data())
def test_real_payloads_with_any_field_replaced_are_parsed_or_refused(payload, data):
    path = data.draw(st.sampled_from(list(_paths(payload))))
    _parses_or_refuses(_replace(payload, path, data.draw(json_values)))
