"""JSON request bodies parsed as a stream, with the nesting limit enforced while parsing.

Flask's ``request.get_json`` reads the whole body into memory, then parses it with Python's recursive parser:
a 32 MiB body of base64 images is held twice (the bytes and the parsed strings), and 5,000 nested brackets end
in a ``RecursionError``. :class:`StreamedJSONRequest` (the app's ``request_class``) parses instead from the
request stream with ijson's C parser (yajl, iterative), 256 KiB at a time, and counts the nesting on the way:
the body deeper than ``max_json_depth`` is refused (400 ``json-too-deep``) as soon as the parser gets there,
and the raw body is never held whole. The result is the same Python object ``json.loads`` would give
(``use_float``: numbers are ``int`` or ``float``). Every view keeps calling ``request.get_json``.
"""

from __future__ import annotations

import io
from typing import IO, Any

import ijson
from flask import Request, request
from werkzeug.exceptions import ClientDisconnected

from app.http.problems import Problem, request_timeout

READ_SIZE = 256 * 1024  # bytes handed to the parser per read
_OPEN = frozenset(("start_map", "start_array"))
_CLOSE = frozenset(("end_map", "end_array"))


class _Reader:
    """``read(n)`` of a request stream, with ``read(0)`` answered here (ijson probes the stream with it, and
    werkzeug's ``LimitedStream`` takes a zero-byte read for a client that went away)."""

    def __init__(self, stream: IO[bytes]) -> None:
        self._stream = stream

    def read(self, size: int = -1) -> bytes:
        return b"" if size == 0 else self._stream.read(size)


class JSONTooDeepError(ValueError):
    """The body nests deeper than the limit; raised while parsing, before the rest is read."""

    def __init__(self, max_depth: int) -> None:
        super().__init__(f"the JSON body is nested deeper than {max_depth} levels")
        self.max_depth = max_depth


def load_json(stream: IO[bytes], max_depth: int) -> Any:
    """The JSON value in ``stream`` (read in :data:`READ_SIZE` pieces); :class:`JSONTooDeepError` past ``max_depth``.

    Malformed JSON (trailing data, an empty or cut-off body, bytes that are not UTF-8) raises ``ValueError``
    with the parser's first line of explanation.
    """
    builder = ijson.ObjectBuilder()
    depth = 0
    try:
        for event, value in ijson.basic_parse(_Reader(stream), use_float=True, buf_size=READ_SIZE):
            if event in _OPEN:
                depth += 1
                if depth > max_depth:
                    raise JSONTooDeepError(max_depth)
            elif event in _CLOSE:
                depth -= 1
            builder.event(event, value)
    except ijson.JSONError as exc:
        reason = exc.args[0] if exc.args else exc
        reason = reason.decode(errors="replace") if isinstance(reason, bytes) else str(reason)
        raise ValueError(f"not valid JSON: {reason.splitlines()[0] if reason else 'parse error'}") from exc
    if not hasattr(builder, "value"):
        raise ValueError("not valid JSON: the body is empty")
    return builder.value


class StreamedJSONRequest(Request):
    """Flask's request whose ``get_json`` streams (see the module docstring); ``max_json_depth`` is set per app."""

    max_json_depth = 32

    def get_json(self, force: bool = False, silent: bool = False, cache: bool = True) -> Any:
        """As Flask's, parsed from the stream with the depth limit; a too-deep body is a 400 even when ``silent``."""
        if cache and self._cached_json[silent] is not Ellipsis:
            return self._cached_json[silent]
        if not (force or self.is_json):
            return None if silent else self.on_json_loading_failed(None)
        cached = getattr(self, "_cached_data", None)
        source = io.BytesIO(cached) if cached is not None else self.stream
        try:
            value = load_json(source, self.max_json_depth)
        except (TimeoutError, ConnectionError, ClientDisconnected) as exc:  # the read deadline, or the client left
            raise request_timeout() from exc
        except JSONTooDeepError as exc:
            raise Problem(
                400,
                "JSON too deep",
                f"{exc}; juicer's bodies are a few levels deep",
                type="json-too-deep",
                max_depth=exc.max_depth,
            ) from exc
        except (ValueError, UnicodeDecodeError) as exc:
            if not silent:
                value = self.on_json_loading_failed(exc)
            else:
                value = None
            if cache:
                normal, quiet = self._cached_json
                self._cached_json = (value, quiet) if not silent else (normal, value)
            return value
        if cache:
            self._cached_json = (value, value)
        return value


def request_class(max_json_depth: int) -> type[StreamedJSONRequest]:
    """The request class of an app whose JSON bodies may nest ``max_json_depth`` levels."""
    return type("JuicerRequest", (StreamedJSONRequest,), {"max_json_depth": int(max_json_depth)})


def json_object(detail: str = "the body must be a JSON object") -> dict[str, Any]:
    """The request's body as a JSON object: 415 unless it is sent as ``application/json``, 400 when it is not an object.

    The one body reader of both HTTP doors (``/v1`` and Label Studio's, which sends ``application/json``).
    """
    if not request.is_json:
        raise Problem(415, "JSON expected", "send Content-Type: application/json with a JSON object", type="unsupported-media-type")
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise Problem(400, "Bad JSON body", detail, type="bad-request")
    return body
