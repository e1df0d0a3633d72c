"""Edges of the protocol seam found by a second review: cancels of objects whose create or end
raced the cancel, a Responses job handed back in the middle of a create, and an unreadable
Responses stream event. Each test failed on the code it was written against."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import anyio
import pytest
from aiohttp import web
from test_driver import calls, make_config, registry
from test_loop_keeps_runloop_behaviour import ignore, rig
from worker_tools import lab

from orchestrator import orchestrator as orch_mod
from orchestrator import tools, worker
from orchestrator.emulator import Emulator
from orchestrator.protocols.assistants import models
from orchestrator.protocols.responses import client as client_mod
from orchestrator.store import JobState, ResponseJob, SqliteStore

__all__ = ["calls", "registry"]

pytestmark = pytest.mark.anyio

STALL = json.dumps([{"stall": True}])


@pytest.fixture
async def emu() -> AsyncIterator[Emulator]:
    async with Emulator(queue_delay=0.005, think_delay=0.01) as e:
        yield e


@asynccontextmanager
async def late_creates(emu: Emulator, *, delay: float) -> AsyncIterator[str]:
    """A loopback proxy in front of ``emu`` that forwards each ``POST /responses`` after
    ``delay`` even when its client has gone (as a real server applies a request it fully
    received; the emulator drops the handlers of disconnected clients). Its base URL."""

    async def forward(request: web.Request) -> web.Response:
        body = await request.read()
        if request.method == "POST" and request.path.endswith("/responses"):
            await anyio.sleep(delay)
        url = emu.base_url.removesuffix("/v1") + request.path_qs
        async with session.request(
            request.method, url, data=body or None, headers={"Authorization": "Bearer k"}
        ) as upstream:
            data = await upstream.read()
            content_type = upstream.headers.get("Content-Type", "application/json")
            return web.Response(
                status=upstream.status, body=data, content_type=content_type.split(";")[0]
            )

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", forward)
    runner = web.AppRunner(app)  # handler_cancellation off: a request taken is forwarded
    await runner.setup()
    async with aiohttp.ClientSession() as session:
        try:
            await web.TCPSite(runner, "127.0.0.1", 0).start()
            yield f"http://127.0.0.1:{runner.addresses[0][1]}/v1"
        finally:
            await runner.cleanup()


async def test_a_response_created_after_the_caller_left_is_cancelled(
    emu: Emulator, registry: tools.ToolRegistry
) -> None:
    """The caller goes away while the create is on its way; the server applies it a moment
    later (as a create not shielded may be). The session must look for it more than once
    within ``cancel_timeout`` (as the Assistants session does) and cancel it, not leave a
    background response running that nobody follows."""
    async with late_creates(emu, delay=0.4) as base_url:
        cfg = make_config(api={"base_url": base_url}, poll={"mode": "poll"})
        async with orch_mod.Orchestrator(cfg, registry=registry, api_key="k") as orch:
            with anyio.move_on_after(0.1):
                await orch.respond(model="m", input="x", metadata={"emulator_script": STALL})
    with anyio.move_on_after(3):
        while emu.responses_stats().responses != {"cancelled": 1}:  # noqa: ASYNC110
            await anyio.sleep(0.02)  # the emulator's state, polled: no event to wait on
    assert emu.responses_stats().responses == {"cancelled": 1}


async def test_a_run_that_completes_while_its_deadline_cancel_is_on_the_way_is_completed(
    emu: Emulator, registry: tools.ToolRegistry
) -> None:
    """The deadline passes while the run works; it completes while the cancel request is on
    its way, so the server refuses the cancel (400). The outcome is the run's own (completed,
    with its reply), as the Responses session reports it, not ``timed_out`` with the run shown
    ``in_progress``."""
    emu.configure(queue_delay=0.01, think_delay=0.6, slow_delay=0.8)
    cfg = make_config(poll={"mode": "poll"}, run={"run_timeout": 0.3, "cancel_timeout": 3.0})
    async with rig(emu, registry, cfg) as (_c, runs, thread_id, assistant):
        emu.inject("slow", method="POST", path_suffix="/cancel", after_apply=False)
        body = models.CreateRun(
            assistant_id=assistant, metadata={"emulator_script": json.dumps([{"message": "hi"}])}
        )
        with anyio.fail_after(20):
            result = await runs.create(thread_id, body, emit=ignore)
    assert emu.stats().count(contains="/cancel") == 1  # the cancel was sent (and refused)
    assert result.run.status == "completed", result.run.status
    assert result.outcome == "completed"


async def test_a_job_handed_back_during_its_create_does_not_start_a_second_chain(
    emu: Emulator, tmp_path: Path
) -> None:
    """A graceful stop hands back a Responses job whose first create is on its way (no tool
    round is running, so the drain does not wait). ``release`` does not count the attempt,
    so the next claim drives it as attempt 1, which (``resumed = attempt > 1``) creates
    without looking for what the first attempt made: two chains for one job."""
    db = tmp_path / "jobs.sqlite3"
    cfg, t = lab.settings(db, emu.base_url), lab.Lab()
    emu.configure(slow_delay=1.0)
    emu.inject("slow", method="POST", path_suffix="/responses", after_apply=True)
    async with (
        lab.client(cfg) as c,
        client_mod.ResponsesClient(cfg.api, cfg.retry, api_key="sk-test") as r,
        SqliteStore(db) as st,
    ):
        spec = ResponseJob(
            model="gpt-4o-mini", input="go", metadata={"emulator_script": lab.script([False])}
        )
        job_id = await st.enqueue(spec)
        first = worker.Worker(cfg, st, c, t.registry, worker_id="w1", responses=r)
        async with anyio.create_task_group() as tg:
            tg.start_soon(first.run)
            with anyio.fail_after(10):
                while not emu.responses_stats().responses:  # noqa: ASYNC110
                    await anyio.sleep(0.01)  # applied on the server, its answer still due
            first.stop()
        handed = await st.get(job_id)
        second = worker.Worker(cfg, st, c, t.registry, worker_id="w2", responses=r)
        with anyio.fail_after(30):
            await second.run(until_idle=True)
        job = await st.get(job_id)
        listed = await r.list_responses(limit=100)
    assert handed is not None
    assert handed.state is JobState.QUEUED  # handed back, not left to lapse
    assert job is not None
    assert job.state is JobState.SUCCEEDED, job.result
    opened = [
        x
        for x in listed.data
        if (x.metadata or {}).get(client_mod.CLIENT_ID_KEY) == f"{job_id}:open"
    ]
    assert len(opened) == 1, [x.id for x in opened]


def _response_json(status: str, **fields: object) -> dict[str, object]:
    return {
        "id": "resp_1",
        "object": "response",
        "created_at": 1,
        "status": status,
        "model": "m",
        "output": [],
        **fields,
    }


async def test_an_unreadable_response_stream_event_is_a_cut_not_a_failure(
    registry: tools.ToolRegistry,
) -> None:
    """A known event whose data does not fit its shape: the drive goes on (resumed after the
    last event read, then polled), as the Assistants stream does, instead of failing."""
    message = {
        "type": "message",
        "id": "msg_1",
        "role": "assistant",
        "status": "completed",
        "content": [{"type": "output_text", "text": "done", "annotations": []}],
    }
    streams = 0

    async def create(request: web.Request) -> web.Response:
        return web.json_response(_response_json("queued", background=True))

    async def retrieve(request: web.Request) -> web.StreamResponse:
        nonlocal streams
        if request.query.get("stream") != "true":
            return web.json_response(_response_json("completed", output=[message]))
        streams += 1
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        garbled = {"type": "response.in_progress", "sequence_number": 1, "response": 42}
        await response.write(
            f"event: response.in_progress\ndata: {json.dumps(garbled)}\n\n".encode()
        )
        await response.write_eof()
        return response

    app = web.Application()
    app.router.add_post("/v1/responses", create)
    app.router.add_get("/v1/responses/{id}", retrieve)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        base_url = f"http://127.0.0.1:{runner.addresses[0][1]}/v1"
        cfg = make_config(api={"base_url": base_url}, poll={"mode": "stream"})
        seen: list[object] = []
        async with orch_mod.Orchestrator(cfg, registry=registry, api_key="k") as orch:
            with anyio.fail_after(20):
                result = await orch.respond(model="m", input="x", handler=seen.append)
    finally:
        await runner.cleanup()
    assert (result.outcome, result.reply) == ("completed", "done")
    assert streams >= 1
    assert any(type(e).__name__ == "StreamFallback" for e in seen)
