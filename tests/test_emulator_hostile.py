"""The emulator answers hostile or broken requests like a server: an API error, never a 500."""

from __future__ import annotations

import asyncio
import io
import json
import random
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import msgspec
import pytest

from orchestrator.emulator import Emulator, schema

pytestmark = pytest.mark.anyio

FAST: dict[str, Any] = {"queue_delay": 0.0, "think_delay": 0.01, "cancel_delay": 0.0}


class Node(msgspec.Struct):
    value: int
    next: Node | None


class Head(msgspec.Struct):
    head: Node


@pytest.fixture
async def emu() -> AsyncIterator[Emulator]:
    async with Emulator(**FAST) as e:
        yield e


async def post(emu: Emulator, path: str, body: bytes | Any) -> tuple[int, Any]:
    data: Any = body if isinstance(body, bytes) else json.dumps(body).encode()
    if len(data) > 1024 * 1024:
        data = io.BytesIO(data)  # aiohttp warns about large raw bytes
    async with (
        aiohttp.ClientSession() as s,
        s.post(emu.base_url + path, data=data, headers={"Content-Type": "application/json"}) as r,
    ):
        return r.status, json.loads(await r.read())


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


_DEEP_TOOL = (
    b'{"model": "m", "tools": [{"type": "function", "function": {"name": "f", "parameters": '
    b'{"x": ' + nested(1000).encode() + b"}}}]}"
)


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/threads", b'{"unknown": ' + nested(1000).encode() + b"}"),
        ("/assistants", _DEEP_TOOL),
        ("/threads", b'{"metadata": {"k": "\xc3\x28"}}'),
        ("/threads", b'{"metadata": {"k": "\xed\xa0\x80"}}'),
    ],
    ids=["nested-skipped-field", "nested-free-form-field", "invalid-utf8", "surrogate-utf8"],
)
async def test_undecodable_bodies_are_400(emu: Emulator, path: str, body: bytes) -> None:
    status, reply = await post(emu, path, body)
    assert status == 400
    assert "could not parse the JSON body" in reply["error"]["message"]


@pytest.mark.parametrize("text", [5, 1.5, True, None, [1], ["a"]])
async def test_text_parts_that_are_neither_string_nor_object_are_400(
    emu: Emulator, text: Any
) -> None:
    message = {
        "role": "user",
        "content": [{"type": "text", "text": "ok"}, {"type": "text", "text": text}],
    }
    status, reply = await post(emu, "/threads", {"messages": [message]})
    assert status == 400
    assert reply["error"]["code"] == "invalid_type"
    assert reply["error"]["param"] == "content[1].text"
    status, thread = await post(emu, "/threads", {})
    status, reply = await post(emu, f"/threads/{thread['id']}/messages", message)
    assert status == 400
    status, ok = await post(
        emu,
        f"/threads/{thread['id']}/messages",
        {**message, "content": [{"type": "text", "text": {"value": "v"}}]},
    )
    assert status == 200
    assert ok["content"][0]["text"]["value"] == "v"


async def test_a_script_nesting_arguments_2000_deep_is_400(emu: Emulator) -> None:
    text = '[{"tool_calls": [{"name": "f", "arguments": ' + nested(2000) + "}]}]"
    body = {"model": "gpt-4o", "metadata": {"emulator_script": text}}
    status, reply = await post(emu, "/assistants", body)
    assert status == 400
    assert reply["error"]["param"] == "metadata.emulator_script"
    status, assistant = await post(emu, "/assistants", {"model": "gpt-4o"})
    deep = {"assistant_id": assistant["id"], "metadata": {"emulator_faults": nested(2000)}}
    status, reply = await post(emu, "/threads/runs", deep)
    assert status == 400
    assert reply["error"]["param"] == "metadata.emulator_faults"


async def tool_arguments(emu: Emulator, parameters: Any) -> str:
    status, assistant = await post(emu, "/assistants", {"model": "gpt-4o"})
    tool = {"type": "function", "function": {"name": "f", "parameters": parameters}}
    status, run = await post(
        emu, "/threads/runs", {"assistant_id": assistant["id"], "tools": [tool]}
    )
    assert status == 200, run
    async with aiohttp.ClientSession() as s:
        for _ in range(200):
            url = f"{emu.base_url}/threads/{run['thread_id']}/runs/{run['id']}"
            async with s.get(url) as r:
                run = await r.json()
            if run["status"] == "requires_action":
                calls = run["required_action"]["submit_tool_outputs"]["tool_calls"]
                return str(calls[0]["function"]["arguments"])
            await asyncio.sleep(0.01)
    raise AssertionError(f"run stuck in {run['status']}")


async def test_a_recursive_struct_gets_valid_arguments(emu: Emulator) -> None:
    arguments = await tool_arguments(emu, msgspec.json.schema(Head))
    head = msgspec.json.decode(arguments, type=Head).head
    length = 1
    while head.next is not None:
        head, length = head.next, length + 1
    assert 1 <= length <= 8


@pytest.mark.parametrize(
    "parameters",
    [
        {
            "type": "object",
            "properties": {"n": {"$ref": "#/$defs/N"}},
            "required": ["n"],
            "$defs": {
                "N": {
                    "type": "object",
                    "properties": {"n": {"$ref": "#/$defs/N"}},
                    "required": ["n"],
                }
            },
        },
        {"type": "object", "properties": {"a": {"type": "string", "minLength": "x"}}},
        {"type": "object", "properties": {"a": {"anyOf": []}}, "required": ["a"]},
        {"type": "object", "properties": {"a": {"$ref": "#/nowhere/x"}}, "required": ["a"]},
        {"type": "object", "properties": {"a": {"$ref": 5}}, "required": ["a"]},
        {
            "type": "object",
            "properties": {"a": {"type": "integer", "minimum": 1e300}},
            "required": ["a"],
        },
        {
            "type": "object",
            "properties": {"a": {"type": "number", "minimum": -1.7e308, "maximum": 1.7e308}},
            "required": ["a"],
        },
        {"type": "object", "properties": {"a": {"type": "array", "minItems": 5, "maxItems": 2}}},
        {
            "type": "object",
            "properties": {"a": {"type": "string", "minLength": 10**12}},
            "required": ["a"],
        },
        {"type": "object", "properties": [1, 2]},
        {"type": "object", "properties": {"a": True, "b": False}, "required": [["x"]]},
        {
            "type": "object",
            "properties": {
                "a": {
                    "type": "array",
                    "items": {"type": "boolean"},
                    "uniqueItems": True,
                    "minItems": 50,
                }
            },
            "required": ["a"],
        },
    ],
)
async def test_schemas_synthesis_cannot_satisfy_still_give_a_run(
    emu: Emulator, parameters: Any
) -> None:
    arguments = await tool_arguments(emu, parameters)
    assert isinstance(json.loads(arguments), dict)
    assert len(arguments) < 2_000_000


def test_synthesis_is_bounded() -> None:
    huge = {
        "type": "object",
        "properties": {"a": {"type": "array", "items": {"type": "integer"}, "minItems": 3_000_000}},
        "required": ["a"],
    }
    value = schema.synthesize(huge, random.Random(0))
    assert 0 < len(value["a"]) <= 20_000


async def test_a_body_over_the_limit_is_a_413_that_says_so(emu: Emulator) -> None:
    status, reply = await post(emu, "/threads", b" " * (9 * 1024 * 1024))
    assert status == 413
    assert "too large" in reply["error"]["message"]
    assert "8388608 bytes" in reply["error"]["message"]


async def test_emulator_routes_answer_in_api_errors_and_require_the_key() -> None:
    async with Emulator(require_api_key="sk-right", **FAST) as emu, aiohttp.ClientSession() as s:
        root = emu.azure_endpoint + "/_emulator/"
        async with s.get(root + "stats") as r:
            assert r.status == 401
            assert "API key" in (await r.json())["error"]["message"]
        auth = {"Authorization": "Bearer sk-right"}
        async with s.get(root + "stats", headers=auth) as r:
            assert r.status == 200
        async with s.post(root + "reset", headers={"api-key": "sk-right"}) as r:
            assert r.status == 200
        async with s.post(root + "reset", headers={"api-key": "sk-wrong"}) as r:
            assert r.status == 401
        async with s.get(root + "nope", headers=auth) as r:
            assert r.status == 404
            assert (await r.json())["error"]["message"] == "Invalid URL (GET /_emulator/nope)"
        async with s.put(root + "reset", headers=auth) as r:
            assert r.status == 405
            assert (await r.json())["error"]["type"] == "invalid_request_error"


async def test_a_stalled_request_body_is_timed_out() -> None:
    async with Emulator(body_timeout=0.2, **FAST) as emu:
        reader, writer = await asyncio.open_connection("127.0.0.1", emu.port)
        writer.write(
            b"POST /v1/threads HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b'Content-Length: 100\r\n\r\n{"metadata":'
        )
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=20)
        length = int(
            next(
                line.split(b":")[1]
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length")
            )
        )
        body = await reader.readexactly(length)
        writer.close()
    assert head.startswith(b"HTTP/1.1 408")
    assert "Timed out reading the request body" in json.loads(body)["error"]["message"]


def test_a_recursive_struct_tool_runs_end_to_end(tmp_path: Path) -> None:
    """``orchestrator run`` with the bundled emulator and a tool taking a linked list."""
    (tmp_path / "node_tools.py").write_text(
        textwrap.dedent(
            '''
            from __future__ import annotations

            from msgspec import Struct

            from orchestrator.tools import tool


            class Node(Struct):
                value: int
                next: Node | None


            @tool
            def chain_length(head: Node) -> int:
                """Count the nodes of a linked list."""
                n, node = 0, head
                while node is not None:
                    n, node = n + 1, node.next
                return n
            '''
        ),
        encoding="utf-8",
    )
    cfg = tmp_path / "config.yaml"
    cfg.write_text("tools:\n  modules: [node_tools]\n", encoding="utf-8")
    done = subprocess.run(
        [sys.executable, "-m", "orchestrator.cli", "--config", str(cfg), "run", "--message", "hi"],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        env={"PATH": "/usr/bin", "PYTHONPATH": str(tmp_path)},
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "finished: completed" in done.stdout
    assert "chain_length -> " in done.stdout
