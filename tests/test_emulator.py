"""The emulator over real HTTP on loopback: lifecycle, rules, errors, streaming, paging, Azure."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import anyio
import pytest
from multidict import CIMultiDictProxy

from orchestrator.emulator import Emulator

pytestmark = pytest.mark.anyio

FAST: dict[str, Any] = {"queue_delay": 0.01, "think_delay": 0.02, "cancel_delay": 0.01}
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "unit": {"enum": ["c", "f"]}},
            "required": ["city", "unit"],
        },
    },
}
TIME = {"type": "function", "function": {"name": "get_time"}}


@dataclass
class Reply:
    status: int
    body: Any
    headers: CIMultiDictProxy[str]


class Api:
    """A thin JSON client for one emulator."""

    def __init__(self, session: aiohttp.ClientSession, base: str) -> None:
        self.session = session
        self.base = base

    async def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        data: bytes | None = None,
        headers: dict[str, str] | None = None,
        params: dict[str, str] | None = None,
    ) -> Reply:
        async with self.session.request(
            method,
            self.base + path,
            json=body,
            data=data,
            headers=headers or {"Authorization": "Bearer x"},
            params=params,
        ) as resp:
            raw = await resp.read()
            return Reply(resp.status, json.loads(raw) if raw else None, resp.headers)

    async def ok(self, method: str, path: str, body: Any = None, **kw: Any) -> Any:
        reply = await self.call(method, path, body, **kw)
        assert reply.status == 200, reply.body
        return reply.body

    async def assistant(self, tools: list[Any], **extra: Any) -> str:
        return str(
            (await self.ok("POST", "/assistants", {"model": "m", "tools": tools, **extra}))["id"]
        )

    async def thread(self, text: str = "hello") -> str:
        body = {"messages": [{"role": "user", "content": text}]}
        return str((await self.ok("POST", "/threads", body))["id"])

    async def run(self, thread: str, assistant: str, **extra: Any) -> dict[str, Any]:
        body = {"assistant_id": assistant, **extra}
        result: dict[str, Any] = await self.ok("POST", f"/threads/{thread}/runs", body)
        return result

    async def wait(self, thread: str, run: str, *statuses: str) -> dict[str, Any]:
        with anyio.fail_after(5):
            while True:
                got: dict[str, Any] = await self.ok("GET", f"/threads/{thread}/runs/{run}")
                if got["status"] in statuses:
                    return got
                await anyio.sleep(0.005)

    async def submit(self, thread: str, run: dict[str, Any], output: str = "ok") -> Reply:
        calls = run["required_action"]["submit_tool_outputs"]["tool_calls"]
        outputs = [{"tool_call_id": c["id"], "output": output} for c in calls]
        path = f"/threads/{thread}/runs/{run['id']}/submit_tool_outputs"
        return await self.call("POST", path, {"tool_outputs": outputs})


@pytest.fixture
async def emu() -> AsyncIterator[Emulator]:
    async with Emulator(**FAST) as e:
        yield e


@pytest.fixture
async def api(emu: Emulator) -> AsyncIterator[Api]:
    async with aiohttp.ClientSession() as session:
        yield Api(session, emu.base_url)


def error(reply: Reply, status: int) -> dict[str, Any]:
    assert reply.status == status, reply.body
    assert set(reply.body) == {"error"}
    err: dict[str, Any] = reply.body["error"]
    assert set(err) == {"message", "type", "param", "code"}
    return err


# --- lifecycle ---------------------------------------------------------------------------------


async def test_run_moves_through_its_statuses_with_the_api_fields(api: Api) -> None:
    asst = await api.assistant([WEATHER])
    thread = await api.thread("weather?")
    run = await api.run(thread, asst)
    assert run["id"].startswith("run_")
    assert run["object"] == "thread.run"
    assert run["status"] == "queued"
    assert run["started_at"] is None
    assert run["usage"] is None
    assert run["required_action"] is None
    assert run["expires_at"] == pytest.approx(run["created_at"] + 600, abs=1)

    waiting = await api.wait(thread, run["id"], "requires_action")
    assert waiting["started_at"] is not None
    assert waiting["usage"] is None
    assert waiting["expires_at"] is not None
    calls = waiting["required_action"]["submit_tool_outputs"]["tool_calls"]
    assert [c["function"]["name"] for c in calls] == ["get_weather"]
    assert calls[0]["id"].startswith("call_")
    args = json.loads(calls[0]["function"]["arguments"])
    assert isinstance(args["city"], str)
    assert args["unit"] in ("c", "f")

    submitted = await api.submit(thread, waiting, json.dumps({"temp": 21}))
    assert submitted.status == 200
    assert submitted.body["status"] == "queued"
    assert submitted.body["required_action"] is None

    done = await api.wait(thread, run["id"], "completed")
    assert done["completed_at"] is not None
    assert done["expires_at"] is None
    assert done["required_action"] is None
    assert done["last_error"] is None
    usage = done["usage"]
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"] > 0

    steps = (await api.ok("GET", f"/threads/{thread}/runs/{run['id']}/steps"))["data"]
    assert [s["type"] for s in steps] == ["message_creation", "tool_calls"]
    fn = steps[1]["step_details"]["tool_calls"][0]["function"]
    assert fn["output"] == '{"temp": 21}'
    assert steps[1]["status"] == "completed"
    messages = await api.ok("GET", f"/threads/{thread}/messages", params={"run_id": run["id"]})
    [reply] = messages["data"]
    assert reply["role"] == "assistant"
    assert reply["run_id"] == run["id"]
    assert 'get_weather -> {"temp": 21}' in reply["content"][0]["text"]["value"]
    assert steps[0]["step_details"]["message_creation"]["message_id"] == reply["id"]


async def test_parallel_calls_come_in_one_round_and_serial_calls_one_per_round(api: Api) -> None:
    asst = await api.assistant([WEATHER, TIME])
    thread = await api.thread()
    run = await api.run(thread, asst)
    waiting = await api.wait(thread, run["id"], "requires_action")
    names = [
        c["function"]["name"]
        for c in waiting["required_action"]["submit_tool_outputs"]["tool_calls"]
    ]
    assert names == ["get_weather", "get_time"]
    await api.submit(thread, waiting)
    await api.wait(thread, run["id"], "completed")

    serial = await api.run(thread, asst, parallel_tool_calls=False)
    seen = []
    for _ in range(2):
        waiting = await api.wait(thread, serial["id"], "requires_action")
        [call] = waiting["required_action"]["submit_tool_outputs"]["tool_calls"]
        seen.append(call["function"]["name"])
        assert (await api.submit(thread, waiting, call["function"]["name"] + "!")).status == 200
    done = await api.wait(thread, serial["id"], "completed")
    assert done["status"] == "completed"
    assert seen == ["get_weather", "get_time"]
    [reply] = (await api.ok("GET", f"/threads/{thread}/messages", params={"run_id": serial["id"]}))[
        "data"
    ]
    assert "get_weather -> get_weather!" in reply["content"][0]["text"]["value"]
    assert "get_time -> get_time!" in reply["content"][0]["text"]["value"]


async def test_without_function_tools_the_run_completes_with_a_message(api: Api) -> None:
    asst = await api.assistant([{"type": "code_interpreter"}, WEATHER])
    thread = await api.thread("just talk")
    run = await api.run(thread, asst, tool_choice="none")
    done = await api.wait(thread, run["id"], "completed", "requires_action")
    assert done["status"] == "completed"
    [reply, _] = (await api.ok("GET", f"/threads/{thread}/messages"))["data"]
    assert reply["content"][0]["text"]["value"] == "You said: just talk"


async def test_scripted_rounds_fail_incomplete_raw_arguments_and_templates(api: Api) -> None:
    script = [
        {"think_ms": 5},
        {
            "tool_calls": [
                {"name": "a", "arguments": {"x": 1}},
                {"name": "b", "arguments_raw": "{oops"},
            ]
        },
        {"message": "a said {output:a}; all: {outputs}"},
    ]
    asst = await api.assistant([])
    thread = await api.thread()
    run = await api.run(thread, asst, metadata={"emulator_script": json.dumps(script)})
    waiting = await api.wait(thread, run["id"], "requires_action")
    calls = waiting["required_action"]["submit_tool_outputs"]["tool_calls"]
    assert [(c["function"]["name"], c["function"]["arguments"]) for c in calls] == [
        ("a", '{"x":1}'),
        ("b", "{oops"),
    ]
    await api.submit(thread, waiting, "R")
    await api.wait(thread, run["id"], "completed")
    [reply] = (await api.ok("GET", f"/threads/{thread}/messages", params={"run_id": run["id"]}))[
        "data"
    ]
    assert reply["content"][0]["text"]["value"] == "a said R; all: a -> R\nb -> R"

    failing = await api.run(
        thread, asst, metadata={"emulator_script": '[{"fail": "rate_limit_exceeded"}]'}
    )
    failed = await api.wait(thread, failing["id"], "failed")
    assert failed["last_error"]["code"] == "rate_limit_exceeded"
    assert failed["last_error"]["message"]
    assert failed["failed_at"] is not None
    assert failed["usage"] is not None
    assert failed["expires_at"] is None

    cut = await api.run(
        thread, asst, metadata={"emulator_script": '[{"incomplete": "max_prompt_tokens"}]'}
    )
    incomplete = await api.wait(thread, cut["id"], "incomplete")
    assert incomplete["incomplete_details"] == {"reason": "max_prompt_tokens"}


async def test_assistant_metadata_script_applies_and_a_bad_script_is_refused(api: Api) -> None:
    asst = await api.assistant([], metadata={"emulator_script": '[{"fail": "invalid_prompt"}]'})
    thread = await api.thread()
    run = await api.run(thread, asst)
    assert (await api.wait(thread, run["id"], "failed"))["last_error"]["code"] == "invalid_prompt"
    bad = await api.call(
        "POST",
        f"/threads/{thread}/runs",
        {"assistant_id": asst, "metadata": {"emulator_script": '[{"fail": "x", "message": "y"}]'}},
    )
    assert error(bad, 400)["param"] == "metadata.emulator_script"
    bad = await api.call(
        "POST", "/assistants", {"model": "m", "metadata": {"emulator_script": "[]"}}
    )
    assert error(bad, 400)["param"] == "metadata.emulator_script"


async def test_expiry_when_outputs_never_come_or_the_run_stalls() -> None:
    async with Emulator(run_ttl=0.3, **FAST) as emu, aiohttp.ClientSession() as session:
        api = Api(session, emu.base_url)
        asst = await api.assistant([WEATHER])
        thread = await api.thread()
        run = await api.run(thread, asst)
        await api.wait(thread, run["id"], "requires_action")
        expired = await api.wait(thread, run["id"], "expired")
        assert expired["required_action"] is None
        assert expired["usage"] is not None
        [step] = (await api.ok("GET", f"/threads/{thread}/runs/{run['id']}/steps"))["data"]
        assert step["status"] == "expired"
        assert step["expired_at"] is not None
        late = await api.submit(
            thread, {**run, "required_action": {"submit_tool_outputs": {"tool_calls": []}}}
        )
        assert error(late, 400)["message"] == 'Runs in status "expired" do not accept tool outputs.'

        stall = await api.run(thread, asst, metadata={"emulator_script": '[{"stall": true}]'})
        stalled = await api.wait(thread, stall["id"], "expired")
        assert stalled["started_at"] is not None
        assert stalled["completed_at"] is None
        assert (await api.ok("GET", f"/threads/{thread}/runs/{stall['id']}/steps"))["data"] == []


# --- the rules ---------------------------------------------------------------------------------


async def test_one_active_run_per_thread(api: Api) -> None:
    asst = await api.assistant([WEATHER])
    thread = await api.thread()
    run = await api.run(thread, asst)
    second = await api.call("POST", f"/threads/{thread}/runs", {"assistant_id": asst})
    err = error(second, 400)
    assert err["message"] == f"Thread {thread} already has an active run {run['id']}."
    assert err["type"] == "invalid_request_error"
    assert err["param"] is None
    assert err["code"] is None
    message = await api.call(
        "POST", f"/threads/{thread}/messages", {"role": "user", "content": "hi"}
    )
    assert (
        error(message, 400)["message"]
        == f"Can't add messages to {thread} while a run {run['id']} is active."
    )
    waiting = await api.wait(thread, run["id"], "requires_action")  # still holds the lock
    assert (await api.call("POST", f"/threads/{thread}/runs", {"assistant_id": asst})).status == 400
    await api.submit(thread, waiting)
    await api.wait(thread, run["id"], "completed")
    assert (
        await api.ok("POST", f"/threads/{thread}/messages", {"role": "user", "content": "next"})
    )["role"] == "user"
    assert (await api.run(thread, asst))["status"] == "queued"


async def test_submit_is_refused_in_the_wrong_status_and_with_the_wrong_call_ids(api: Api) -> None:
    asst = await api.assistant([WEATHER, TIME])
    thread = await api.thread()
    run = await api.run(thread, asst)
    path = f"/threads/{thread}/runs/{run['id']}/submit_tool_outputs"
    early = await api.call(
        "POST", path, {"tool_outputs": [{"tool_call_id": "call_x", "output": "1"}]}
    )
    assert error(early, 400)["message"] == 'Runs in status "queued" do not accept tool outputs.'

    waiting = await api.wait(thread, run["id"], "requires_action")
    ids = [c["id"] for c in waiting["required_action"]["submit_tool_outputs"]["tool_calls"]]
    partial = await api.call(
        "POST", path, {"tool_outputs": [{"tool_call_id": ids[0], "output": "1"}]}
    )
    assert (
        error(partial, 400)["message"] == f"Expected tool outputs for call_ids {ids}, got {ids[:1]}"
    )
    wrong = await api.call(
        "POST", path, {"tool_outputs": [{"tool_call_id": i + "x", "output": "1"} for i in ids]}
    )
    assert error(wrong, 400)["message"].startswith(f"Expected tool outputs for call_ids {ids}")

    not_str = await api.call(
        "POST", path, {"tool_outputs": [{"tool_call_id": i, "output": {"a": 1}} for i in ids]}
    )
    assert error(not_str, 400)["message"] == (
        "1 validation error for Request\nbody -> tool_outputs -> 0 -> output\n"
        "  str type expected (type=type_error.str)"
    )
    extra = await api.call("POST", path, {"tool_outputs": [], "force": True})
    assert "body -> force\n  extra fields not permitted" in error(extra, 400)["message"]
    assert (await api.wait(thread, run["id"], "requires_action"))["status"] == "requires_action"
    outputs = [{"tool_call_id": i, "output": "1"} for i in reversed(ids)]  # any order
    assert (await api.call("POST", path, {"tool_outputs": outputs})).status == 200


async def test_create_run_refuses_unknown_keys_and_bad_json(api: Api) -> None:
    asst = await api.assistant([])
    thread = await api.thread()
    unknown = await api.call(
        "POST", f"/threads/{thread}/runs", {"assistant_id": asst, "temprature": 1}
    )
    assert error(unknown, 400)["message"] == (
        "1 validation error for Request\nbody -> temprature\n"
        "  extra fields not permitted (type=value_error.extra)"
    )
    missing = await api.call("POST", f"/threads/{thread}/runs", {})
    assert "body -> assistant_id\n  field required" in error(missing, 400)["message"]
    bad = await api.call(
        "POST",
        f"/threads/{thread}/runs",
        data=b"{nope",
        headers={"Content-Type": "application/json"},
    )
    assert "could not parse the JSON body" in error(bad, 400)["message"]
    listed = await api.ok("GET", f"/threads/{thread}/runs")
    assert listed["data"] == []


async def test_cancel_goes_through_cancelling_and_a_finished_run_refuses(api: Api) -> None:
    asst = await api.assistant([WEATHER])
    thread = await api.thread()
    stalled = await api.run(thread, asst, metadata={"emulator_script": '[{"stall": true}]'})
    await api.wait(thread, stalled["id"], "in_progress")
    cancelling = await api.ok("POST", f"/threads/{thread}/runs/{stalled['id']}/cancel")
    assert cancelling["status"] == "cancelling"
    again = await api.call("POST", f"/threads/{thread}/runs/{stalled['id']}/cancel")
    assert error(again, 400)["message"] == "Cannot cancel run with status 'cancelling'."
    cancelled = await api.wait(thread, stalled["id"], "cancelled")
    assert cancelled["cancelled_at"] is not None
    assert cancelled["expires_at"] is None

    run = await api.run(thread, asst)
    await api.wait(thread, run["id"], "requires_action")
    assert (await api.ok("POST", f"/threads/{thread}/runs/{run['id']}/cancel"))[
        "required_action"
    ] is None
    await api.wait(thread, run["id"], "cancelled")
    [step] = (await api.ok("GET", f"/threads/{thread}/runs/{run['id']}/steps"))["data"]
    assert step["status"] == "cancelled"
    assert step["cancelled_at"] is not None

    done = await api.run(thread, asst, tool_choice="none")
    await api.wait(thread, done["id"], "completed")
    refused = await api.call("POST", f"/threads/{thread}/runs/{done['id']}/cancel")
    assert error(refused, 400)["message"] == "Cannot cancel run with status 'completed'."


async def test_unknown_ids_and_urls(api: Api) -> None:
    asst = await api.assistant([WEATHER])
    thread = await api.thread()
    other = await api.thread()
    run = await api.run(thread, asst)
    cases = [
        ("GET", "/threads/thread_nope", "No thread found with id 'thread_nope'."),
        ("GET", f"/threads/{thread}/runs/run_nope", "No run found with id 'run_nope'."),
        ("GET", f"/threads/{other}/runs/{run['id']}", f"No run found with id '{run['id']}'."),
        ("GET", "/assistants/asst_nope", "No assistant found with id 'asst_nope'."),
        (
            "GET",
            f"/threads/{thread}/runs/{run['id']}/steps/step_nope",
            "No run step found with id 'step_nope'.",
        ),
        ("GET", f"/threads/{thread}/messages/msg_nope", "No message found with id 'msg_nope'."),
        ("POST", f"/threads/{thread}/runs/run_nope/cancel", "No run found with id 'run_nope'."),
        ("GET", "/nothing/here", "Invalid URL (GET /v1/nothing/here)"),
    ]
    for method, path, message in cases:
        assert error(await api.call(method, path), 404)["message"] == message
    unknown_asst = await api.call("POST", f"/threads/{other}/runs", {"assistant_id": "asst_nope"})
    assert error(unknown_asst, 404)["message"] == "No assistant found with id 'asst_nope'."
    malformed = await api.call("GET", "/threads/undefined/runs")
    assert error(malformed, 400)["message"] == (
        "Invalid 'thread_id': 'undefined'. Expected an ID that begins with 'thread'."
    )


async def test_api_key_is_required_when_configured() -> None:
    async with Emulator(require_api_key="sk-right", **FAST) as emu, aiohttp.ClientSession() as s:
        api = Api(s, emu.base_url)
        missing = await api.call("GET", "/assistants", headers={"X": "1"})
        assert "didn't provide an API key" in error(missing, 401)["message"]
        wrong = await api.call("GET", "/assistants", headers={"Authorization": "Bearer sk-wrong"})
        err = error(wrong, 401)
        assert err["code"] == "invalid_api_key"
        assert "sk-wrong" not in err["message"]
        assert (
            await api.call("GET", "/assistants", headers={"Authorization": "Bearer sk-right"})
        ).status == 200
        azure = Api(s, emu.azure_endpoint + "/openai")
        q = {"api-version": "2024-05-01-preview"}
        assert (
            await azure.call("GET", "/assistants", headers={"api-key": "sk-right"}, params=q)
        ).status == 200
        denied = await azure.call("GET", "/assistants", headers={"api-key": "nope"}, params=q)
        assert error(denied, 401)["code"] == "401"
        assert "sk-right" not in repr(emu.settings)


async def test_headers_request_id_rate_limit_and_poll_after(api: Api, emu: Emulator) -> None:
    asst = await api.assistant([])
    thread = await api.thread()
    created = await api.call("POST", f"/threads/{thread}/runs", {"assistant_id": asst})
    assert "openai-poll-after-ms" not in created.headers
    emu.configure(poll_after_ms=40)
    got = await api.call("GET", f"/threads/{thread}/runs/{created.body['id']}")
    assert got.headers["openai-poll-after-ms"] == "40"
    other = await api.call("GET", f"/threads/{thread}/runs/{created.body['id']}")
    for reply in (created, got, other, await api.call("GET", "/nowhere")):
        assert reply.headers["x-request-id"].startswith("req_")
        assert int(reply.headers["x-ratelimit-remaining-requests"]) >= 0
        assert "x-ratelimit-limit-requests" in reply.headers
    assert got.headers["x-request-id"] != other.headers["x-request-id"]


# --- streaming ---------------------------------------------------------------------------------


async def read_events(resp: aiohttp.ClientResponse) -> list[tuple[str, str]]:
    """(event, data) pairs of an SSE response, in order."""
    assert resp.headers["Content-Type"].startswith("text/event-stream")
    events: list[tuple[str, str]] = []
    name = ""
    async for raw in resp.content:
        line = raw.decode().rstrip("\n")
        if line.startswith("event: "):
            name = line[7:]
        elif line.startswith("data: "):
            events.append((name, line[6:]))
    return events


async def test_stream_create_thread_and_run_then_submit_continues(api: Api) -> None:
    asst = await api.assistant([WEATHER])
    body = {
        "assistant_id": asst,
        "stream": True,
        "thread": {"messages": [{"role": "user", "content": "hi"}]},
    }
    async with api.session.post(api.base + "/threads/runs", json=body) as resp:
        events = await read_events(resp)
    names = [n for n, _ in events]
    assert names == [
        "thread.created",
        "thread.run.created",
        "thread.run.queued",
        "thread.run.in_progress",
        "thread.run.step.created",
        "thread.run.step.in_progress",
        "thread.run.step.delta",
        "thread.run.step.delta",
        "thread.run.step.delta",
        "thread.run.requires_action",
        "done",
    ]
    assert events[-1][1] == "[DONE]"
    run = json.loads(events[-2][1])
    thread = json.loads(events[0][1])["id"]
    deltas = [
        json.loads(d)["delta"]["step_details"]["tool_calls"][0]
        for n, d in events
        if n.endswith("delta")
    ]
    assert deltas[0]["index"] == 0
    assert deltas[0]["id"] == run["required_action"]["submit_tool_outputs"]["tool_calls"][0]["id"]
    joined = "".join(d["function"]["arguments"] for d in deltas)
    assert (
        joined
        == run["required_action"]["submit_tool_outputs"]["tool_calls"][0]["function"]["arguments"]
    )

    call = run["required_action"]["submit_tool_outputs"]["tool_calls"][0]
    sub = {"tool_outputs": [{"tool_call_id": call["id"], "output": "sunny"}], "stream": True}
    path = f"{api.base}/threads/{thread}/runs/{run['id']}/submit_tool_outputs"
    async with api.session.post(path, json=sub) as resp:
        events = await read_events(resp)
    names = [n for n, _ in events]
    assert names[:3] == ["thread.run.step.completed", "thread.run.queued", "thread.run.in_progress"]
    assert names[-3:] == ["thread.run.step.completed", "thread.run.completed", "done"]
    text = "".join(
        json.loads(d)["delta"]["content"][0]["text"]["value"]
        for n, d in events
        if n == "thread.message.delta"
    )
    assert text == "Here is what the tools returned:\nget_weather -> sunny"


async def test_stream_sees_a_cancel_made_by_another_request(api: Api) -> None:
    asst = await api.assistant([])
    thread = await api.thread()
    body = {
        "assistant_id": asst,
        "stream": True,
        "metadata": {"emulator_script": '[{"stall": true}]'},
    }
    names: list[str] = []

    async def follow() -> None:
        async with api.session.post(f"{api.base}/threads/{thread}/runs", json=body) as resp:
            names.extend(n for n, _ in await read_events(resp))

    async with anyio.create_task_group() as tg:
        tg.start_soon(follow)
        with anyio.fail_after(5):
            while True:
                runs = (await api.ok("GET", f"/threads/{thread}/runs"))["data"]
                if runs:
                    break
                await anyio.sleep(0.005)
        await api.wait(thread, runs[0]["id"], "in_progress")
        await api.ok("POST", f"/threads/{thread}/runs/{runs[0]['id']}/cancel")
    assert names[-3:] == ["thread.run.cancelling", "thread.run.cancelled", "done"]


# --- listing, Azure, stats ---------------------------------------------------------------------


async def test_pagination_of_runs_steps_and_messages(api: Api) -> None:
    asst = await api.assistant([])
    thread = await api.thread("first")
    ids = []
    for _ in range(5):
        run = await api.run(thread, asst)
        await api.wait(thread, run["id"], "completed")
        ids.append(run["id"])
    path = f"/threads/{thread}/runs"
    page1 = await api.ok("GET", path, params={"limit": "2"})
    assert [r["id"] for r in page1["data"]] == ids[::-1][:2]
    assert page1["has_more"] is True
    assert page1["first_id"] == ids[4]
    assert page1["last_id"] == ids[3]
    assert page1["object"] == "list"
    page2 = await api.ok("GET", path, params={"limit": "2", "after": page1["last_id"]})
    assert [r["id"] for r in page2["data"]] == [ids[2], ids[1]]
    assert page2["has_more"] is True
    page3 = await api.ok("GET", path, params={"limit": "2", "after": page2["last_id"]})
    assert [r["id"] for r in page3["data"]] == [ids[0]]
    assert page3["has_more"] is False
    asc = await api.ok("GET", path, params={"order": "asc", "limit": "3"})
    assert [r["id"] for r in asc["data"]] == ids[:3]
    before = await api.ok("GET", path, params={"order": "asc", "before": ids[3], "limit": "2"})
    assert [r["id"] for r in before["data"]] == ids[1:3]
    assert before["has_more"] is True
    assert error(await api.call("GET", path, params={"limit": "101"}), 400)["param"] == "limit"
    assert error(await api.call("GET", path, params={"order": "up"}), 400)["param"] == "order"

    messages = await api.ok(
        "GET", f"/threads/{thread}/messages", params={"order": "asc", "limit": "2"}
    )
    assert [m["role"] for m in messages["data"]] == ["user", "assistant"]
    assert messages["has_more"]
    only = await api.ok("GET", f"/threads/{thread}/messages", params={"run_id": ids[2]})
    assert [m["run_id"] for m in only["data"]] == [ids[2]]

    tools = await api.assistant(
        [WEATHER, TIME],
        metadata={
            "emulator_script": json.dumps(
                [{"tool_calls": [{"name": "get_time"}]}, {"tool_calls": [{"name": "get_weather"}]}]
            )
        },
    )
    run = await api.run(thread, tools)
    for _ in range(2):
        await api.submit(thread, await api.wait(thread, run["id"], "requires_action"))
    await api.wait(thread, run["id"], "completed")
    steps_path = f"/threads/{thread}/runs/{run['id']}/steps"
    all_steps = (await api.ok("GET", steps_path, params={"order": "asc"}))["data"]
    assert [s["type"] for s in all_steps] == ["tool_calls", "tool_calls", "message_creation"]
    first = await api.ok("GET", steps_path, params={"order": "asc", "limit": "1"})
    assert first["data"][0]["id"] == all_steps[0]["id"]
    assert first["has_more"] is True
    rest = await api.ok("GET", steps_path, params={"order": "asc", "after": all_steps[0]["id"]})
    assert [s["id"] for s in rest["data"]] == [s["id"] for s in all_steps[1:]]
    one = await api.ok("GET", f"{steps_path}/{all_steps[1]['id']}")
    assert one["step_details"]["tool_calls"][0]["function"]["name"] == "get_weather"


async def test_azure_form_needs_api_version(emu: Emulator, api: Api) -> None:
    azure = Api(api.session, emu.azure_endpoint + "/openai")
    q = {"api-version": "2024-05-01-preview"}
    asst = (
        await azure.ok("POST", "/assistants", {"model": "deployment", "tools": [WEATHER]}, params=q)
    )["id"]
    thread = (await azure.ok("POST", "/threads", {}, params=q))["id"]
    run = await azure.ok("POST", f"/threads/{thread}/runs", {"assistant_id": asst}, params=q)
    assert run["model"] == "deployment"
    got = await azure.ok("GET", f"/threads/{thread}/runs/{run['id']}", params=q)
    assert got["id"] == run["id"]
    missing = await azure.call("GET", f"/threads/{thread}/runs/{run['id']}")
    assert error(missing, 400)["param"] == "api-version"
    assert emu.stats().count("GET /openai/threads/{thread_id}/runs/{run_id}", 400) == 1


async def test_stats_count_requests_and_runs_and_reset_forgets(emu: Emulator, api: Api) -> None:
    asst = await api.assistant([WEATHER])
    thread = await api.thread()
    run = await api.run(thread, asst)
    await api.wait(thread, run["id"], "requires_action")
    await api.call("GET", "/threads/thread_nope")
    stats = emu.stats()
    assert stats.count("POST /v1/threads/{thread_id}/runs", 200) == 1
    assert stats.count("GET /v1/threads/{thread_id}", 404) == 1
    polls = stats.count("GET /v1/threads/{thread_id}/runs/{run_id}")
    assert polls >= 1
    assert stats.count(contains="/runs") == polls + 1
    assert stats.requests_total == sum(sum(v.values()) for v in stats.requests.values())
    assert stats.runs == {"requires_action": 1}

    async with api.session.get(emu.azure_endpoint + "/_emulator/stats") as resp:
        over_http = await resp.json()
    assert over_http["runs"] == {"requires_action": 1}
    assert over_http["requests"]["POST /v1/threads/{thread_id}/runs"] == {"200": 1}
    assert over_http["requests_total"] == stats.requests_total  # stats calls are not counted

    async with api.session.post(emu.azure_endpoint + "/_emulator/reset") as resp:
        assert resp.status == 200
    after = emu.stats()
    assert after.requests_total == 0
    assert after.runs == {}
    assert error(await api.call("GET", f"/threads/{thread}"), 404)["message"].startswith(
        "No thread"
    )
    emu.reset()
    assert emu.stats().requests_total == 0


async def test_metadata_limits_and_modify(api: Api) -> None:
    asst = await api.assistant([])
    thread = await api.thread()
    long_value = await api.call(
        "POST", f"/threads/{thread}/runs", {"assistant_id": asst, "metadata": {"k": "x" * 513}}
    )
    assert error(long_value, 400)["code"] == "string_above_max_length"
    many = await api.call(
        "POST",
        f"/threads/{thread}/runs",
        {"assistant_id": asst, "metadata": {str(i): "v" for i in range(17)}},
    )
    assert error(many, 400)["param"] == "metadata"
    script = json.dumps([{"think_ms": 1}] * 60 + [{"message": "x" * 200}])
    assert len(script) > 512
    run = await api.run(thread, asst, metadata={"emulator_script": script, "tag": "a"})
    path = f"/threads/{thread}/runs/{run['id']}"
    modified = await api.ok("POST", path, {"metadata": {"tag": "b"}})
    assert modified["metadata"] == {"tag": "b"}
    assert error(await api.call("POST", path, {"metadata": {}, "status": "completed"}), 400)[
        "message"
    ].startswith("1 validation error")


async def test_leaving_the_emulator_with_a_stream_open_does_not_hang() -> None:
    async with aiohttp.ClientSession() as session:
        with anyio.fail_after(10):  # aiohttp's default graceful shutdown would wait 60 s
            async with Emulator(**FAST) as emu:
                api = Api(session, emu.base_url)
                asst = await api.assistant([])
                script = {"emulator_script": '[{"stall": true}]'}
                body = {"assistant_id": asst, "stream": True, "metadata": script}
                resp = await session.post(emu.base_url + "/threads/runs", json=body)
                assert (await resp.content.readline()).startswith(b"event: thread.created")
            resp.close()
