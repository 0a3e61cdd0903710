"""The JSON depth check agrees with the real nesting of any JSON text, strings and escapes included."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from app.guards import json_depth_exceeds

values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(alphabet='[]{}"\\ab', max_size=8),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(alphabet='[]{}"\\k', max_size=4), children, max_size=3),
    max_leaves=30,
)


def depth(value) -> int:
    if isinstance(value, list):
        return 1 + max((depth(item) for item in value), default=0)
    if isinstance(value, dict):
        return 1 + max((depth(item) for item in value.values()), default=0)
    return 0


@settings(max_examples=400, deadline=None)
@given(values, st.integers(0, 6))
def test_depth_check_matches_the_nesting(value, limit):
    body = json.dumps(value).encode()
    assert json_depth_exceeds(body, limit) == (depth(value) > limit)


def test_depth_is_tracked_across_chunks():
    from app import guards

    body = ('["' + "x" * (guards._CHUNK - 3) + '\\\\", ' + "[" * 40 + "]" * 40 + "]").encode()  # an escape at a chunk edge
    assert json_depth_exceeds(body, 32) and not json_depth_exceeds(body, 41)
