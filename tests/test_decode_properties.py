"""Property: whatever bytes a server sends, every decode boundary gives a value or one of our
documented errors (``errors.DecodeError``, an ``errors.APIError``), never anything else
(issue 15, "Must show"; configs and stored job specs have their own suites).

Inputs are arbitrary bytes, arbitrary JSON, and valid wire samples mutated: bytes flipped,
inserted, deleted or cut; a field nested thousands deep added anywhere; invalid UTF-8 or a lone
surrogate escape put inside a string; a field's value swapped for any JSON value.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable
from typing import Any

import msgspec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orchestrator import errors, scrub
from orchestrator.http import transport
from orchestrator.protocols.assistants import models, streaming

SETTINGS = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

RUN: dict[str, Any] = {
    "id": "run_1",
    "object": "thread.run",
    "created_at": 1_700_000_000,
    "thread_id": "thread_1",
    "assistant_id": "asst_1",
    "status": "requires_action",
    "required_action": {
        "type": "submit_tool_outputs",
        "submit_tool_outputs": {
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "lookup", "arguments": '{"q": "x"}'},
                }
            ]
        },
    },
    "last_error": None,
    "tools": [{"type": "function", "function": {"name": "lookup", "parameters": {}}}],
    "metadata": {"k": "v"},
    "usage": None,
    "truncation_strategy": {"type": "auto", "last_messages": None},
    "tool_choice": "auto",
    "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {}}},
}
STEP: dict[str, Any] = {
    "id": "step_1",
    "object": "thread.run.step",
    "created_at": 1,
    "run_id": "run_1",
    "thread_id": "thread_1",
    "assistant_id": "asst_1",
    "type": "tool_calls",
    "status": "completed",
    "step_details": {
        "type": "tool_calls",
        "tool_calls": [
            {
                "id": "call_1",
                "type": "function",
                "function": {"name": "lookup", "arguments": "{}", "output": "1"},
            },
            {
                "id": "c2",
                "type": "code_interpreter",
                "code_interpreter": {"input": "", "outputs": []},
            },
        ],
    },
}
MESSAGE: dict[str, Any] = {
    "id": "msg_1",
    "object": "thread.message",
    "created_at": 1,
    "thread_id": "thread_1",
    "role": "assistant",
    "content": [{"type": "text", "text": {"value": "hi", "annotations": []}}],
}
THREAD: dict[str, Any] = {"id": "thread_1", "object": "thread", "created_at": 1, "metadata": {}}
ERROR: dict[str, Any] = {
    "error": {"message": "bad", "type": "invalid_request_error", "param": None, "code": None}
}
STEP_DELTA: dict[str, Any] = {
    "id": "step_1",
    "delta": {
        "step_details": {
            "type": "tool_calls",
            "tool_calls": [{"index": 0, "type": "function", "function": {"arguments": "{"}}],
        }
    },
}
MESSAGE_DELTA: dict[str, Any] = {
    "id": "msg_1",
    "delta": {"content": [{"index": 0, "type": "text", "text": {"value": "h"}}]},
}


def listing(item: dict[str, Any]) -> dict[str, Any]:
    return {"object": "list", "data": [item], "first_id": "a", "last_id": "a", "has_more": False}


#: Wire types and a valid sample of each.
MODELS: list[tuple[Any, dict[str, Any]]] = [
    (models.Run, RUN),
    (models.RunStep, STEP),
    (models.Message, MESSAGE),
    (models.Thread, THREAD),
    (models.ListRunsResponse, listing(RUN)),
    (models.ListRunStepsResponse, listing(STEP)),
    (models.ErrorResponse, ERROR),
]
#: SSE event names (every known one, ``error``, ``done``, an unknown one) and a valid payload.
EVENTS: list[tuple[str, dict[str, Any]]] = [
    *(
        (name, {models.Run: RUN, models.RunStep: STEP, models.Message: MESSAGE}.get(t, THREAD))
        for name, (t, _) in streaming.EVENT_TYPES.items()
        if t in (models.Run, models.RunStep, models.Message, models.Thread)
    ),
    ("thread.run.step.delta", STEP_DELTA),
    ("thread.message.delta", MESSAGE_DELTA),
    ("error", ERROR),
    ("done", {}),
    ("thread.future.event", RUN),
]

# --- hostile bytes ---------------------------------------------------------------------------

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False)
    | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
BAD_TEXT = [
    b"\xff",
    b"\xc3",
    b"\xed\xa0\x80",
    b"\xf4\x90\x80\x80",
    b"\\ud800",
    b"\\udfff x",
    b"\x00",
]


def deep(depth: int, kind: str) -> bytes:
    if kind == "array":
        return b"[" * depth + b"]" * depth
    return b'{"a":' * depth + b"1" + b"}" * depth


@st.composite
def retyped(draw: st.DrawFn, sample: dict[str, Any]) -> bytes:
    """The sample with the value at one path swapped for any JSON value."""
    value: Any = json.loads(json.dumps(sample))
    holder, key = None, None
    node = value
    for _ in range(draw(st.integers(1, 5))):
        if isinstance(node, dict) and node:
            k = draw(st.sampled_from(sorted(node)))
            holder, key, node = node, k, node[k]
        elif isinstance(node, list) and node:
            i = draw(st.integers(0, len(node) - 1))
            holder, key, node = node, i, node[i]
        else:
            break
    if holder is not None:
        holder[key] = draw(json_values)
    return json.dumps(value).encode()


@st.composite
def mutated(draw: st.DrawFn, sample: dict[str, Any]) -> bytes:
    """The sample's bytes damaged in one to four ways."""
    data = bytearray(json.dumps(sample).encode())
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "insert", "delete", "cut", "nest", "bad_text"]))
        at = draw(st.integers(0, len(data)))
        if op == "flip" and at < len(data):
            data[at] = draw(st.integers(0, 255))
        elif op == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=8))
        elif op == "delete":
            del data[at : at + draw(st.integers(1, 16))]
        elif op == "cut":
            del data[at:]
        elif op == "nest":
            # a well-formed deep field after some "{" (a known, skipped or raw field's object)
            opens = [i for i, b in enumerate(data) if b == ord("{")]
            if opens:
                i = draw(st.sampled_from(opens)) + 1
                depth = draw(st.sampled_from([100, 1_100, 5_000]))
                kind = draw(st.sampled_from(["array", "object"]))
                data[i:i] = b'"zz": ' + deep(depth, kind) + b", "
        elif op == "bad_text":
            # inside some string: right after an opening quote
            quotes = [i for i, b in enumerate(data) if b == ord('"')]
            if quotes:
                i = draw(st.sampled_from(quotes)) + 1
                data[i:i] = draw(st.sampled_from(BAD_TEXT))
    return bytes(data)


def hostile(sample: dict[str, Any]) -> st.SearchStrategy[bytes]:
    return st.one_of(
        st.binary(max_size=512),
        json_values.map(lambda v: json.dumps(v).encode()),
        retyped(sample),
        mutated(sample),
    )


@st.composite
def model_and_bytes(draw: st.DrawFn) -> tuple[Any, bytes]:
    type_, sample = draw(st.sampled_from(MODELS))
    return type_, draw(hostile(sample))


@st.composite
def event_and_bytes(draw: st.DrawFn) -> tuple[str, bytes]:
    name, sample = draw(st.sampled_from(EVENTS))
    return name, draw(hostile(sample))


# --- the value, when there is one, is usable ---------------------------------------------------


def use(value: Any) -> None:
    """Touch what callers read of a decoded value (``Run.tools`` decodes lazily)."""
    if isinstance(value, models.ListResponse):
        for item in value.data:
            use(item)
    elif isinstance(value, models.Run):
        _ = (value.known_status, value.is_terminal, value.tool_calls)
        with contextlib.suppress(errors.DecodeError):  # lazily decoded: may fail, our way
            _ = value.tools
    elif isinstance(value, models.Message):
        _ = value.text
    msgspec.json.encode(value)


# --- the properties -----------------------------------------------------------------------------


def attempt(fn: Callable[[], Any]) -> tuple[Any, errors.OrchestratorError | None]:
    """``fn()``'s value, or the documented error it raised; anything else fails the test."""
    try:
        return fn(), None
    except (errors.DecodeError, errors.APIError) as exc:
        return None, exc


@SETTINGS
@given(model_and_bytes())
def test_models_decode_gives_a_value_or_decode_error(case: tuple[Any, bytes]) -> None:
    type_, data = case
    value, error = attempt(lambda: models.decode(data, type_))
    if error is None:
        use(value)
    else:
        assert isinstance(error, errors.DecodeError)
        assert str(error).startswith(f"{type_.__name__}: ")


@SETTINGS
@given(model_and_bytes())
def test_transport_bodies_give_a_value_or_decode_error(case: tuple[Any, bytes]) -> None:
    type_, data = case
    value, error = attempt(
        lambda: transport.decode_body(data, type_, endpoint="get_run", request_id="req_1")
    )
    if error is None:
        use(value)
    else:
        assert isinstance(error, errors.DecodeError)
        assert str(error).startswith(f"get_run (request req_1): {type_.__name__}: ")
        assert isinstance(error.__cause__, models.DECODE_FAILURES)


@SETTINGS
@given(
    st.sampled_from([400, 401, 403, 404, 408, 409, 418, 422, 429, 500, 503]),
    st.dictionaries(
        st.sampled_from(["content-type", "x-request-id", "retry-after", "retry-after-ms"]),
        st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=30),
    ),
    st.one_of(hostile(ERROR), hostile({"message": "bare error object", "code": "c"})),
)
def test_error_bodies_always_give_an_api_error(
    status: int, headers: dict[str, str], payload: bytes
) -> None:
    error = transport.api_error(status, headers, payload)
    assert isinstance(error, errors.APIError)
    assert error.status == status
    for text in (str(error), repr(error), error.message):
        text.encode("utf-8")  # printable, loggable, storable
        assert scrub.keys(text) == text  # nothing key-shaped left


@SETTINGS
@given(event_and_bytes())
def test_sse_events_give_an_event_or_our_errors(case: tuple[str, bytes]) -> None:
    name, data = case
    message = streaming.SSEMessage(name, data)
    event, error = attempt(lambda: streaming.decode_event(message, status=200, request_id="req_1"))
    if isinstance(error, errors.StreamError):
        assert name == "error"
        str(error).encode("utf-8")
    elif error is not None:
        assert isinstance(error, errors.DecodeError)
        assert name in streaming.EVENT_TYPES
        assert str(error).startswith(f"{name} event: ")
    elif event is not None:
        for attr in ("run", "step", "message", "thread", "delta"):
            if hasattr(event, attr):
                use(getattr(event, attr))


@SETTINGS
@given(
    st.lists(
        st.one_of(
            st.binary(max_size=64),
            st.sampled_from(
                [b"\r", b"\n", b"\r\n", b"data: ", b"event: x\n", b":", b"\xef\xbb\xbf"]
            ),
        ),
        max_size=30,
    ),
    st.data(),
)
def test_sse_framing_takes_any_bytes_split_anywhere(
    parts: list[bytes], data: st.DataObject
) -> None:
    stream = b"".join(parts)
    whole = streaming.SSEDecoder().feed(stream)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=8)))
    decoder = streaming.SSEDecoder()
    pieces: list[streaming.SSEMessage] = []
    for start, end in zip([0, *cuts], [*cuts, len(stream)], strict=True):
        pieces += decoder.feed(stream[start:end])
    assert pieces == whole
    assert decoder.scanned <= 2 * len(stream)
    for message in pieces:
        message.event.encode("utf-8")
