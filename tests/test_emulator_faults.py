"""Fault injection over real HTTP: each kind, per-run faults, apply-or-not, rate limit, seeds."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import anyio
import pytest

from orchestrator import errors
from orchestrator.emulator import Emulator

pytestmark = pytest.mark.anyio

FAST: dict[str, Any] = {"queue_delay": 0.01, "think_delay": 0.02, "cancel_delay": 0.01}
TOOL = {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}
AUTH = {"Authorization": "Bearer x"}


class Api:
    def __init__(self, session: aiohttp.ClientSession, base: str) -> None:
        self.session = session
        self.base = base

    async def call(self, method: str, path: str, body: Any = None) -> tuple[int, bytes, Any]:
        async with self.session.request(method, self.base + path, json=body, headers=AUTH) as r:
            return r.status, await r.read(), r.headers

    async def ok(self, method: str, path: str, body: Any = None) -> Any:
        status, raw, _ = await self.call(method, path, body)
        assert status == 200, raw
        return json.loads(raw)

    async def waiting_run(self, **metadata: str) -> tuple[str, dict[str, Any]]:
        """A thread and a run of it in requires_action."""
        asst = (await self.ok("POST", "/assistants", {"model": "m", "tools": [TOOL]}))["id"]
        thread = (await self.ok("POST", "/threads", {}))["id"]
        run = await self.ok(
            "POST", f"/threads/{thread}/runs", {"assistant_id": asst, "metadata": metadata}
        )
        with anyio.fail_after(5):
            while run["status"] != "requires_action":
                await anyio.sleep(0.005)
                run = await self.ok("GET", f"/threads/{thread}/runs/{run['id']}")
        return thread, run


def outputs(run: dict[str, Any]) -> dict[str, Any]:
    calls = run["required_action"]["submit_tool_outputs"]["tool_calls"]
    return {"tool_outputs": [{"tool_call_id": c["id"], "output": "x"} for c in calls]}


@pytest.fixture
async def emu() -> AsyncIterator[Emulator]:
    async with Emulator(**FAST) as e:
        yield e


@pytest.fixture
async def api(emu: Emulator) -> AsyncIterator[Api]:
    # force_close: a dropped connection must not poison a pooled one
    connector = aiohttp.TCPConnector(force_close=True)
    async with aiohttp.ClientSession(connector=connector) as session:
        yield Api(session, emu.base_url)


ERROR_FAULTS = [
    ("fault_429", 429, "requests", {"retry-after-ms": "75", "retry-after": "1"}),
    ("fault_500", 500, "server_error", {}),
    ("fault_503", 503, "server_error", {}),
    ("fault_no_retry", 500, "server_error", {"x-should-retry": "false"}),
]


@pytest.mark.parametrize("case", ERROR_FAULTS, ids=[c[0] for c in ERROR_FAULTS])
async def test_error_faults(
    emu: Emulator, api: Api, case: tuple[str, int, str, dict[str, str]]
) -> None:
    knob, status, etype, headers = case
    emu.configure(**{knob: 1.0, "retry_after_ms": 75})
    got, raw, hdrs = await api.call("GET", "/assistants")
    assert got == status
    err = json.loads(raw)["error"]
    assert err["type"] == etype
    assert err["message"]
    for name, value in headers.items():
        assert hdrs[name] == value
    assert ("x-should-retry" in hdrs) == (knob == "fault_no_retry")
    assert hdrs["x-request-id"].startswith("req_")
    assert emu.stats().faults == {knob.removeprefix("fault_"): 1}
    assert emu.stats().count("GET /v1/assistants", status) == 1


async def test_dropped_connection(emu: Emulator, api: Api) -> None:
    emu.configure(fault_drop=1.0)
    with pytest.raises(aiohttp.ServerDisconnectedError):
        await api.call("POST", "/threads", {})
    emu.configure(fault_drop=0.0)
    stats = emu.stats()
    assert stats.count("POST /v1/threads", "dropped") == 1
    assert stats.faults == {"drop": 1}


async def test_malformed_body(emu: Emulator, api: Api) -> None:
    await api.ok("POST", "/threads", {})
    emu.configure(fault_malformed=1.0)
    status, raw, hdrs = await api.call("GET", "/assistants")
    assert status == 200
    assert hdrs["Content-Type"] == "application/json"
    with pytest.raises(json.JSONDecodeError):
        json.loads(raw)
    assert raw.startswith(b'{"')


async def test_slow_response_arrives_after_a_later_fast_one(emu: Emulator, api: Api) -> None:
    thread, slow_run = await api.waiting_run()
    slow = {"emulator_faults": json.dumps({"fault_slow": 1.0, "slow_delay": 0.3})}
    await api.ok("POST", f"/threads/{thread}/runs/{slow_run['id']}", {"metadata": slow})
    _, fast_run = await api.waiting_run()
    finished: list[str] = []

    async def get(run: dict[str, Any]) -> None:
        body = await api.ok("GET", f"/threads/{run['thread_id']}/runs/{run['id']}")
        finished.append(body["id"])

    async with anyio.create_task_group() as tg:
        tg.start_soon(get, slow_run)
        await anyio.sleep(0.02)  # the slow request is in the server first
        tg.start_soon(get, fast_run)
    assert finished == [fast_run["id"], slow_run["id"]]
    assert emu.stats().faults == {"slow": 1}


async def test_stream_cut_mid_way(emu: Emulator, api: Api) -> None:
    asst = (await api.ok("POST", "/assistants", {"model": "m", "tools": [TOOL]}))["id"]
    emu.configure(fault_stream_cut=1.0)
    body = {"assistant_id": asst, "stream": True}
    chunks: list[bytes] = []

    async def read_all() -> None:
        async with api.session.post(api.base + "/threads/runs", json=body, headers=AUTH) as r:
            assert r.status == 200
            async for chunk in r.content.iter_any():
                chunks.append(chunk)

    with pytest.raises(aiohttp.ClientPayloadError):
        await read_all()
    got = b"".join(chunks)
    assert got.startswith(b"event: thread.created")
    assert b"event: done" not in got
    assert emu.stats().faults == {"stream_cut": 1}


async def test_a_faulted_submit_does_not_apply_by_default(emu: Emulator, api: Api) -> None:
    thread, run = await api.waiting_run()
    path = f"/threads/{thread}/runs/{run['id']}"
    emu.configure(fault_500=1.0)
    assert (await api.call("POST", path + "/submit_tool_outputs", outputs(run)))[0] == 500
    emu.configure(fault_500=0.0)
    assert (await api.ok("GET", path))["status"] == "requires_action"
    assert (await api.ok("POST", path + "/submit_tool_outputs", outputs(run)))["status"] == "queued"


async def test_fault_after_apply_loses_the_answer_of_an_applied_submit(
    emu: Emulator, api: Api
) -> None:
    thread, run = await api.waiting_run()
    path = f"/threads/{thread}/runs/{run['id']}"
    emu.configure(fault_503=1.0, fault_after_apply=True)
    assert (await api.call("POST", path + "/submit_tool_outputs", outputs(run)))[0] == 503
    emu.configure(fault_503=0.0)
    assert (await api.ok("GET", path))["status"] != "requires_action"
    # The client's retry now meets the race the real API shows.
    status, raw, _ = await api.call("POST", path + "/submit_tool_outputs", outputs(run))
    assert status == 400
    assert b"do not accept tool outputs" in raw


async def test_after_apply_drop_on_a_streamed_submit_still_applies(emu: Emulator, api: Api) -> None:
    thread, run = await api.waiting_run()
    path = f"/threads/{thread}/runs/{run['id']}"
    emu.configure(fault_drop=1.0, fault_after_apply=True)
    with pytest.raises(aiohttp.ServerDisconnectedError):
        await api.call("POST", path + "/submit_tool_outputs", {**outputs(run), "stream": True})
    emu.configure(fault_drop=0.0)
    assert (await api.ok("GET", path))["status"] != "requires_action"


async def test_faulted_create_run_creates_nothing(emu: Emulator, api: Api) -> None:
    asst = (await api.ok("POST", "/assistants", {"model": "m"}))["id"]
    thread = (await api.ok("POST", "/threads", {}))["id"]
    emu.configure(fault_429=1.0)
    status, _, _ = await api.call("POST", f"/threads/{thread}/runs", {"assistant_id": asst})
    assert status == 429
    emu.configure(fault_429=0.0)
    assert (await api.ok("GET", f"/threads/{thread}/runs"))["data"] == []


async def test_per_run_faults_hit_only_that_run(emu: Emulator, api: Api) -> None:
    faulty = json.dumps({"fault_503": 1.0})
    thread, run = await api.waiting_run()
    path = f"/threads/{thread}/runs/{run['id']}"
    await api.ok("POST", path, {"metadata": {"emulator_faults": faulty}})
    assert (await api.call("GET", path))[0] == 503
    assert (await api.call("GET", path + "/steps"))[0] == 503
    other_thread, other = await api.waiting_run()
    assert (await api.call("GET", f"/threads/{other_thread}/runs/{other['id']}"))[0] == 200
    assert (await api.call("GET", "/assistants"))[0] == 200
    bad = {"metadata": {"emulator_faults": '{"fault_500": 2}'}}
    status, raw, _ = await api.call("POST", f"/threads/{other_thread}/runs/{other['id']}", bad)
    assert status == 400
    assert json.loads(raw)["error"]["param"] == "metadata.emulator_faults"


async def test_emulator_routes_are_never_faulted(emu: Emulator, api: Api) -> None:
    emu.configure(fault_500=1.0, rate_limit_rps=1)
    for _ in range(3):
        async with api.session.get(emu.azure_endpoint + "/_emulator/stats") as resp:
            assert resp.status == 200


async def test_rate_limit_mode(emu: Emulator, api: Api) -> None:
    emu.configure(rate_limit_rps=3)
    replies = []

    async def one() -> None:
        replies.append(await api.call("GET", "/assistants"))

    async with anyio.create_task_group() as tg:
        for _ in range(12):
            tg.start_soon(one)
    limited = [(s, raw, h) for s, raw, h in replies if s == 429]
    assert limited
    assert len(limited) < len(replies)
    _, raw, hdrs = limited[0]
    assert json.loads(raw)["error"]["code"] == "rate_limit_exceeded"
    assert int(hdrs["retry-after-ms"]) > 0
    assert int(hdrs["retry-after"]) >= 1
    assert hdrs["x-ratelimit-limit-requests"] == "3"
    assert hdrs["x-ratelimit-remaining-requests"] == "0"
    assert hdrs["x-ratelimit-reset-requests"].endswith("ms")
    assert emu.stats().faults == {}  # the limit is not a fault
    ok_headers = next(h for s, _, h in replies if s == 200)
    assert int(ok_headers["x-ratelimit-remaining-requests"]) < 3


async def sequence(seed: int) -> list[int]:
    async with (
        Emulator(seed=seed, fault_500=0.3, fault_429=0.2, **FAST) as emu,
        aiohttp.ClientSession() as session,
    ):
        api = Api(session, emu.base_url)
        return [(await api.call("GET", "/assistants"))[0] for _ in range(30)]


async def test_faults_are_reproducible_under_a_seed() -> None:
    first = await sequence(7)
    assert first == await sequence(7)
    assert set(first) == {200, 429, 500}
    assert first != await sequence(8)


async def test_settings_are_checked() -> None:
    with pytest.raises(errors.ConfigError, match="add up to"):
        Emulator(fault_500=0.7, fault_503=0.7)
    with pytest.raises(errors.ConfigError, match="unknown emulator settings"):
        Emulator(fault_teapot=1.0)
    with pytest.raises(errors.ConfigError, match="fault_drop"):
        Emulator(fault_drop=1.5)
