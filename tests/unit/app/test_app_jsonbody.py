"""JSON bodies parse as a stream: the same value as json.loads, the depth limit met while parsing, bounded reads."""

from __future__ import annotations

import base64
import io
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.http.jsonbody import READ_SIZE, JSONTooDeepError, load_json

values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63) + 1, 2**63 - 1) | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(alphabet='[]{}"\\ab\u00e9\U0001f600\n', max_size=8),
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
@given(values, st.integers(0, 6), st.booleans())
def test_the_streamed_value_is_json_loads_and_the_depth_limit_is_the_real_nesting(value, limit, ascii_only):
    body = json.dumps(value, ensure_ascii=ascii_only).encode()
    if depth(value) > limit:
        with pytest.raises(JSONTooDeepError):
            load_json(io.BytesIO(body), limit)
    else:
        assert load_json(io.BytesIO(body), limit) == json.loads(body)


class CountingStream(io.BytesIO):
    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self.reads: list[int] = []

    def read(self, size: int = -1) -> bytes:
        self.reads.append(size)
        return super().read(size)


def test_a_large_body_is_read_in_pieces_and_a_deep_one_is_refused_before_the_rest_is_read():
    image = base64.b64encode(bytes(range(256)) * 20_000).decode()  # a 6.8 MB string
    stream = CountingStream(json.dumps({"images": [image, image]}).encode())
    assert load_json(stream, 32)["images"] == [image, image]
    assert max(stream.reads) <= READ_SIZE and -1 not in stream.reads
    deep = CountingStream(b"[" * 5_000 + b"]" * 5_000 + b" " * 1_000_000)
    with pytest.raises(JSONTooDeepError):
        load_json(deep, 32)
    assert deep.tell() <= READ_SIZE  # stopped at the 33rd bracket, the megabyte after it never read


@pytest.mark.parametrize("body", [b"", b"{", b"{} []", b"{nope", b"\xff\xfe", b'{"a": NaN}', b"[1,]", b"[36893488147419103232]"])
def test_malformed_bodies_are_value_errors_with_a_one_line_reason(body):
    """(Integers past 64 bits are refused: no id or count of juicer's is that large.)"""
    with pytest.raises(ValueError, match="^not valid JSON: ") as caught:
        load_json(io.BytesIO(body), 32)
    assert "\n" not in str(caught.value)


def test_the_service_refuses_deep_and_malformed_json_with_problem_bodies(client):
    deep = b'{"images": ' + b"[" * 5_000 + b"]" * 5_000 + b"}"
    for path in ("/v1/predict", "/v1/labels", "/v1/items"):
        response = client.post(path, data=deep, content_type="application/json")
        assert response.status_code == 400 and response.json["type"].endswith("json-too-deep"), (path, response.json)
    response = client.post("/v1/predict", data=b"{nope", content_type="application/json")
    assert response.status_code == 400 and response.mimetype == "application/problem+json"
    response = client.post("/v1/labels", data=b"{nope", content_type="application/json")
    assert response.status_code == 400 and response.mimetype == "application/problem+json"


class StalledStream(io.BytesIO):
    """A request body whose socket times out after the first bytes (app.http.server's deadline raising in recv)."""

    def read(self, size: int = -1) -> bytes:
        data = super().read(size)
        if not data and size != 0:
            raise TimeoutError("the request did not arrive within 120 s")
        return data


def test_a_body_that_stops_arriving_is_a_408_problem():
    from werkzeug.exceptions import ClientDisconnected
    from werkzeug.test import EnvironBuilder

    from app.http.jsonbody import request_class
    from app.http.problems import Problem, _from_http_exception

    environ = EnvironBuilder(method="POST", input_stream=StalledStream(b'{"images": ["' + b"A" * 5_000),
                             content_type="application/json", content_length=100_000).get_environ()
    environ["wsgi.input_terminated"] = True  # as gunicorn sets it: the app reads the server's own body stream
    with pytest.raises(Problem) as caught:
        request_class(32)(environ).get_json(silent=True)
    assert caught.value.status == 408 and caught.value.type.endswith("request-timeout")
    assert _from_http_exception(ClientDisconnected()).status == 408  # a multipart body that stops arriving
