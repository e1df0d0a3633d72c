"""Property: whatever body a client POSTs to the emulator, it never answers 500.

The emulator runs in a background thread (a blocking portal) and the examples are sent with
``http.client``, so hypothesis drives plain synchronous tests.
"""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterator
from typing import Any

import anyio.from_thread
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as hs

from orchestrator.emulator import Emulator

FAST: dict[str, Any] = {"queue_delay": 0.0, "think_delay": 0.0, "cancel_delay": 0.0}
PROPS = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)

_KEYS = [
    "assistant_id", "model", "tools", "type", "function", "name", "parameters", "metadata",
    "messages", "role", "content", "text", "value", "tool_outputs", "tool_call_id", "output",
    "stream", "instructions", "tool_choice", "thread", "parallel_tool_calls", "emulator_script",
    "image_file", "file_id", "attachments", "truncation_strategy", "response_format",
]  # fmt: skip
_SCHEMA_KEYS = [
    "type", "properties", "items", "prefixItems", "anyOf", "oneOf", "allOf", "$ref", "$defs",
    "required", "enum", "const", "minItems", "maxItems", "uniqueItems", "minimum", "maximum",
    "exclusiveMinimum", "exclusiveMaximum", "multipleOf", "minLength", "maxLength", "format",
    "additionalItems", "a", "b",
]  # fmt: skip
_WORDS = [
    "object", "array", "string", "integer", "number", "boolean", "null", "user", "assistant",
    "text", "function", "#/$defs/N", "#", "#/properties/a", "date-time", "uuid", "f",
]  # fmt: skip

_scalars = hs.one_of(
    hs.none(),
    hs.booleans(),
    hs.integers(-(2**70), 2**70),
    hs.floats(allow_nan=False, allow_infinity=False),
    hs.text(max_size=8),
    hs.sampled_from(_WORDS),
)


def _json(keys: list[str]) -> hs.SearchStrategy[Any]:
    return hs.recursive(
        _scalars,
        lambda inner: hs.one_of(
            hs.lists(inner, max_size=4),
            hs.dictionaries(hs.sampled_from(keys) | hs.text(max_size=4), inner, max_size=5),
        ),
        max_leaves=25,
    )


_bodies = _json(_KEYS)
_schemas = _json(_SCHEMA_KEYS)


class Client:
    """Synchronous JSON posts to one emulator."""

    def __init__(self, port: int) -> None:
        self.port = port

    def post(self, path: str, body: bytes) -> tuple[int, bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        try:
            conn.request(
                "POST", "/v1" + path, body=body, headers={"Content-Type": "application/json"}
            )
            answer = conn.getresponse()
            return answer.status, answer.read()
        finally:
            conn.close()

    def ok(self, path: str, body: Any) -> Any:
        status, data = self.post(path, json.dumps(body).encode())
        assert status == 200, data
        return json.loads(data)

    def never_500(self, path: str, body: bytes) -> None:
        status, data = self.post(path, body)
        assert status < 500, (path, body[:300], data[:300])
        if status >= 400:
            assert "message" in json.loads(data)["error"]


@pytest.fixture(scope="module")
def api() -> Iterator[Client]:
    with (
        anyio.from_thread.start_blocking_portal() as portal,
        portal.wrap_async_context_manager(Emulator(**FAST)) as emu,
    ):
        yield Client(emu.port)


@pytest.fixture(scope="module")
def ids(api: Client) -> dict[str, str]:
    assistant = api.ok("/assistants", {"model": "gpt-4o"})
    thread = api.ok("/threads", {})
    run = api.ok("/threads/runs", {"assistant_id": assistant["id"]})
    return {"assistant": assistant["id"], "thread": thread["id"], "run": run["id"],
            "run_thread": run["thread_id"]}  # fmt: skip


def _paths(ids: dict[str, str]) -> list[str]:
    run = f"/threads/{ids['run_thread']}/runs/{ids['run']}"
    return [
        "/assistants",
        "/threads",
        "/threads/runs",
        f"/threads/{ids['thread']}/messages",
        f"/threads/{ids['thread']}/runs",
        run,
        run + "/submit_tool_outputs",
        run + "/cancel",
    ]


_deep = hs.builds(
    lambda key, depth, tail: b'{"' + key.encode() + b'": ' + b"[" * depth + tail,
    hs.sampled_from(_KEYS),
    hs.integers(500, 3000),
    hs.binary(max_size=20),
)
_bad_utf8 = hs.builds(
    lambda key, junk: b'{"' + key.encode() + b'": "' + junk + b'"}',
    hs.sampled_from(_KEYS),
    hs.sampled_from([b"\xc3\x28", b"\xed\xa0\x80", b"\xff", b"\xf4\x90\x80\x80"]),
)


@PROPS
@given(hs.integers(0, 7), hs.binary(max_size=200) | _deep | _bad_utf8)
def test_arbitrary_bytes_never_500(
    api: Client, ids: dict[str, str], route: int, body: bytes
) -> None:
    api.never_500(_paths(ids)[route], body)


@PROPS
@given(hs.integers(0, 7), _bodies)
def test_json_shaped_bodies_never_500(
    api: Client, ids: dict[str, str], route: int, body: Any
) -> None:
    api.never_500(_paths(ids)[route], json.dumps(body).encode())


@PROPS
@given(hs.dictionaries(hs.sampled_from(["a", "b", "c"]), _schemas, max_size=3), _schemas)
def test_tool_schemas_never_500(
    api: Client, ids: dict[str, str], properties: dict[str, Any], defs: Any
) -> None:
    parameters = {
        "type": "object",
        "properties": properties,
        "required": sorted(properties),
        "$defs": {"N": defs},
    }
    tool = {"type": "function", "function": {"name": "f", "parameters": parameters}}
    body = {"assistant_id": ids["assistant"], "tools": [tool]}
    api.never_500("/threads/runs", json.dumps(body).encode())


@PROPS
@given(_json(["tool_calls", "name", "arguments", "arguments_raw", "message", "think_ms", "fail"]))
def test_scripts_never_500(api: Client, script: Any) -> None:
    body = {"model": "gpt-4o", "metadata": {"emulator_script": json.dumps(script)[:4000]}}
    api.never_500("/assistants", json.dumps(body).encode())
