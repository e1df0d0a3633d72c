"""The run driver and the embedded Orchestrator, end to end over loopback against the emulator."""

from __future__ import annotations

import itertools
import json
from collections.abc import AsyncIterator
from typing import Any

import anyio
import anyio.lowlevel
import msgspec
import pytest
from aiohttp import web
from run_shapes import run_json

from orchestrator import config, errors, events, tools
from orchestrator import orchestrator as orch_mod
from orchestrator.emulator import Emulator
from orchestrator.protocols.assistants import models
from orchestrator.protocols.assistants.client import AssistantsClient

pytestmark = pytest.mark.anyio

RUN_ROUTES = "/runs"  # every run endpoint's route template contains it


def make_config(**sections: dict[str, Any]) -> config.Config:
    raw: dict[str, Any] = {
        "poll": {"initial_interval": 0.01, "max_interval": 0.05, "multiplier": 1.5},
        "retry": {"initial_backoff": 0.01, "max_backoff": 0.02, "attempts": 6},
        "tools": {"deadline_margin": 0.05, "timeout": 5.0},
        "run": {"cancel_timeout": 2.0},
    }
    for name, values in sections.items():
        raw[name] = {**raw.get(name, {}), **values}
    return msgspec.convert(raw, config.Config)


class Calls:
    """What the test tools were called with."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, Any]] = []


@pytest.fixture
def calls() -> Calls:
    return Calls()


@pytest.fixture
def registry(calls: Calls) -> tools.ToolRegistry:
    reg = tools.ToolRegistry()

    @reg.tool
    def add(a: int, b: int) -> int:
        """Add two integers.

        Args:
            a: The first.
            b: The second.
        """
        calls.seen.append(("add", (a, b)))
        return a + b

    @reg.tool
    async def city_info(city: str) -> dict[str, str]:
        """Facts about a city.

        Args:
            city: The city's name.
        """
        calls.seen.append(("city_info", city))
        await anyio.lowlevel.checkpoint()
        return {"city": city, "country": "France"}

    @reg.tool
    def boom(reason: str) -> str:
        """Always fails.

        Args:
            reason: Why.
        """
        calls.seen.append(("boom", reason))
        raise RuntimeError(f"kaboom: {reason}")

    @reg.tool(on_error="raise")
    def critical(x: int) -> str:
        """Fails and must stop the run.

        Args:
            x: Anything.
        """
        raise ValueError("critical failure")

    return reg


@pytest.fixture
async def emu() -> AsyncIterator[Emulator]:
    async with Emulator(queue_delay=0.01, think_delay=0.02, cancel_delay=0.01) as e:
        yield e


@pytest.fixture
async def client(emu: Emulator) -> AsyncIterator[AssistantsClient]:
    cfg = make_config()
    api = msgspec.structs.replace(cfg.api, base_url=emu.base_url)
    async with AssistantsClient(api, cfg.retry, api_key="sk-test") as c:
        yield c


SAFE_TOOLS = ("add", "city_info")


async def make_assistant(client: AssistantsClient, registry: tools.ToolRegistry) -> str:
    """An assistant with the tools that succeed (the emulator's default script calls them all;
    tests script calls to the failing ones explicitly)."""
    definitions = [
        d for d in registry.definitions() if d.function and d.function.name in SAFE_TOOLS
    ]
    a = await client.create_assistant(model="gpt-4o", tools=definitions)
    return a.id


def script(*rounds: dict[str, Any]) -> dict[str, str]:
    return {"emulator_script": json.dumps(list(rounds))}


def faults(**kw: Any) -> dict[str, str]:
    return {"emulator_faults": json.dumps(kw)}


async def drive(
    client: AssistantsClient,
    registry: tools.ToolRegistry,
    cfg: config.Config,
    *,
    metadata: dict[str, str] | None = None,
    message: str = "hello",
) -> tuple[Any, list[events.Event]]:
    seen: list[events.Event] = []
    assistant = await make_assistant(client, registry)
    thread = await client.create_thread()
    async with orch_mod.Orchestrator(
        cfg, registry=registry, client=client, handler=seen.append
    ) as orch:
        result = await orch.run(
            thread_id=thread.id,
            assistant_id=assistant,
            messages=[models.MessageRequest(role="user", content=message)],
            metadata=metadata,
        )
    return result, seen


def of(seen: list[events.Event], kind: type[events.Event]) -> list[Any]:
    return [e for e in seen if isinstance(e, kind)]


def assert_consistent_chain(seen: list[events.Event]) -> None:
    """Each status change starts where the previous one ended: nothing lost or repeated."""
    changes = of(seen, events.StatusChanged)
    assert changes[0].previous is None
    for before, after in itertools.pairwise(changes):
        assert after.previous == before.current
        assert after.current != after.previous
    assert isinstance(seen[0], events.RunCreated | events.RunAdopted)
    assert isinstance(seen[-1], events.RunFinished)
    assert len(of(seen, events.RunFinished)) == 1


@pytest.mark.parametrize("mode", ["poll", "stream"])
async def test_several_rounds_with_parallel_calls(
    mode: str, client: AssistantsClient, registry: tools.ToolRegistry, calls: Calls
) -> None:
    cfg = make_config(poll={"mode": mode})
    result, seen = await drive(
        client,
        registry,
        cfg,
        metadata=script(
            {
                "tool_calls": [
                    {"name": "add", "arguments": {"a": 2, "b": 3}},
                    {"name": "city_info", "arguments": {"city": "Paris"}},
                ]
            },
            {"tool_calls": [{"name": "add", "arguments": {"a": 40, "b": 2}}]},
            {"message": "sum={output:add} all={outputs}"},
        ),
    )
    assert result.ok, result
    assert result.outcome == "completed"
    assert result.rounds == 2
    assert [o.output for o in result.outputs] == ["5", '{"city":"Paris","country":"France"}', "42"]
    assert sorted(c[0] for c in calls.seen) == ["add", "add", "city_info"]
    assert result.reply is not None
    assert "42" in result.reply
    assert_consistent_chain(seen)
    statuses = [e.current for e in of(seen, events.StatusChanged)]
    assert statuses.count("requires_action") == 2
    assert statuses[-1] == "completed"
    assert len(of(seen, events.OutputsSubmitted)) == 2
    finished = of(seen, events.ToolCallFinished)
    assert {f.name for f in finished} == {"add", "city_info"}
    assert all(f.error_type is None for f in finished)
    for event in seen:  # every event is JSON and comes back equal
        assert events.decode_event(events.encode_event(event)) == event


@pytest.mark.parametrize("mode", ["poll", "stream"])
async def test_bad_arguments_and_failing_tool_become_outputs(
    mode: str, client: AssistantsClient, registry: tools.ToolRegistry, calls: Calls
) -> None:
    cfg = make_config(poll={"mode": mode})
    result, seen = await drive(
        client,
        registry,
        cfg,
        metadata=script(
            {
                "tool_calls": [
                    {"name": "add", "arguments_raw": "{not json"},
                    {"name": "add", "arguments": {"a": "two", "b": 3}},
                    {"name": "boom", "arguments": {"reason": "testing"}},
                    {"name": "no_such_tool", "arguments": {}},
                ]
            },
        ),
    )
    assert result.ok
    errors_by_type = [f.error_type for f in of(seen, events.ToolCallFinished)]
    assert sorted(t for t in errors_by_type if t) == sorted(
        ["invalid_json", "invalid_arguments", "tool_exception", "unknown_tool"]
    )
    outputs = [json.loads(o.output) for o in result.outputs]
    assert all("error" in o for o in outputs)
    assert "kaboom: testing" in result.outputs[2].output
    assert calls.seen == [("boom", "testing")]  # the invalid calls never reached a tool


async def test_on_error_raise_cancels_the_run(
    client: AssistantsClient, registry: tools.ToolRegistry
) -> None:
    result, seen = await drive(
        client,
        registry,
        make_config(),
        metadata=script({"tool_calls": [{"name": "critical", "arguments": {"x": 1}}]}),
    )
    assert result.outcome == "tool_failed"
    assert result.run.status == "cancelled"
    assert of(seen, events.RunFinished)[0].outcome == "tool_failed"
    server = await client.retrieve_run(result.run.thread_id, result.run.id)
    assert server.status == "cancelled"


@pytest.mark.parametrize(
    ("round_", "status", "detail"),
    [
        ({"fail": "server_error"}, "failed", "server_error"),
        ({"fail": "rate_limit_exceeded"}, "failed", "rate_limit_exceeded"),
        ({"incomplete": "max_completion_tokens"}, "incomplete", "max_completion_tokens"),
    ],
)
async def test_failed_and_incomplete_runs(
    client: AssistantsClient,
    registry: tools.ToolRegistry,
    round_: dict[str, Any],
    status: str,
    detail: str,
) -> None:
    result, _ = await drive(client, registry, make_config(), metadata=script(round_))
    assert not result.ok
    assert result.outcome == status
    if status == "failed":
        assert result.run.last_error is not None
        assert result.run.last_error.code == detail
    else:
        assert result.run.incomplete_details is not None
        assert result.run.incomplete_details.reason == detail


async def test_failed_run_is_created_again_when_configured(
    client: AssistantsClient, registry: tools.ToolRegistry
) -> None:
    cfg = make_config(
        run={
            "retry_failed_codes": ["rate_limit_exceeded"],
            "retry_failed_attempts": 2,
            "retry_failed_backoff": 0.01,
        }
    )
    result, seen = await drive(
        client, registry, cfg, metadata=script({"fail": "rate_limit_exceeded"})
    )
    assert result.outcome == "failed"
    assert len(of(seen, events.RunCreated)) == 3
    assert len({e.run.id for e in of(seen, events.RunCreated)}) == 3


async def test_stalled_run_expires(emu: Emulator, registry: tools.ToolRegistry) -> None:
    emu.configure(run_ttl=0.3)
    cfg = make_config()
    api = msgspec.structs.replace(cfg.api, base_url=emu.base_url)
    async with AssistantsClient(api, cfg.retry, api_key="k") as c:
        result, _ = await drive(c, registry, cfg, metadata=script({"stall": True}))
    assert result.outcome == "expired"
    assert result.run.status == "expired"


async def test_tool_deadline_follows_expires_at(
    client: AssistantsClient, registry: tools.ToolRegistry, calls: Calls
) -> None:
    """Tools never run past the run's expires_at (less the margin): past it, a timeout output."""
    cfg = make_config(tools={"deadline_margin": 3600.0})  # beyond the emulator's 600 s TTL
    result, seen = await drive(
        client,
        registry,
        cfg,
        metadata=script({"tool_calls": [{"name": "add", "arguments": {"a": 1, "b": 1}}]}),
    )
    assert result.ok
    finished = of(seen, events.ToolCallFinished)
    assert [f.error_type for f in finished] == ["timeout"]
    assert calls.seen == []


async def test_run_timeout_cancels_a_stuck_run(
    client: AssistantsClient, registry: tools.ToolRegistry
) -> None:
    cfg = make_config(run={"run_timeout": 0.2})
    result, _ = await drive(client, registry, cfg, metadata=script({"stall": True}))
    assert result.outcome == "timed_out"
    assert result.run.status == "cancelled"


@pytest.mark.parametrize("mode", ["poll", "stream"])
async def test_storm_of_429_and_500(mode: str, emu: Emulator, registry: tools.ToolRegistry) -> None:
    emu.configure(fault_429=0.2, fault_500=0.15, fault_503=0.05, retry_after_ms=5, seed=7)
    cfg = make_config(poll={"mode": mode}, retry={"attempts": 10})
    api = msgspec.structs.replace(cfg.api, base_url=emu.base_url)
    async with AssistantsClient(api, cfg.retry, api_key="k") as c:
        results = []

        async def one() -> None:
            result, seen = await drive(c, registry, cfg)
            assert_consistent_chain(seen)
            results.append(result)

        async with anyio.create_task_group() as tg:
            for _ in range(4):
                tg.start_soon(one)
    assert [r.outcome for r in results] == ["completed"] * 4
    stats = emu.stats()
    assert stats.count(status=429) + stats.count(status=500) + stats.count(status=503) > 0


async def test_stream_cut_falls_back_to_polling_without_losing_events(
    client: AssistantsClient, registry: tools.ToolRegistry, calls: Calls
) -> None:
    cfg = make_config(poll={"mode": "stream"})
    result, seen = await drive(
        client,
        registry,
        cfg,
        metadata={
            **script({"tool_calls": [{"name": "add", "arguments": {"a": 1, "b": 2}}]}),
            **faults(fault_stream_cut=1.0),
        },
    )
    assert result.ok
    assert of(seen, events.StreamFallback)
    assert_consistent_chain(seen)
    assert calls.seen == [("add", (1, 2))]


async def test_submit_race_never_runs_a_tool_twice(
    client: AssistantsClient, registry: tools.ToolRegistry, calls: Calls
) -> None:
    """The submit reaches the server but its answer is lost: the retry must not re-run tools."""
    result, seen = await drive(
        client,
        registry,
        make_config(),
        metadata={
            **script(
                {"tool_calls": [{"name": "add", "arguments": {"a": 1, "b": 2}}]},
                {"tool_calls": [{"name": "add", "arguments": {"a": 3, "b": 4}}]},
            ),
            **faults(fault_drop=0.5, fault_after_apply=True),
        },
    )
    assert result.ok
    assert calls.seen == [("add", (1, 2)), ("add", (3, 4))]
    ids = [f.tool_call_id for f in of(seen, events.ToolCallFinished)]
    assert len(ids) == len(set(ids))


async def test_unknown_status_is_reported_and_waited_out(registry: tools.ToolRegistry) -> None:
    """A status from the future is an event, not a crash; the run is followed to its end."""
    polls = 0

    def run(status: str) -> dict[str, Any]:
        return run_json(status, brand_new_field={"x": 1})

    async def create(request: web.Request) -> web.Response:
        return web.json_response(run("queued"))

    async def retrieve(request: web.Request) -> web.Response:
        nonlocal polls
        polls += 1
        return web.json_response(run("paused_for_review" if polls < 3 else "completed"))

    async def messages(request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [], "has_more": False})

    app = web.Application()
    app.router.add_post("/v1/threads/{t}/runs", create)
    app.router.add_get("/v1/threads/{t}/runs/{r}", retrieve)
    app.router.add_get("/v1/threads/{t}/messages", messages)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    seen: list[events.Event] = []
    try:
        cfg = make_config(api={"base_url": f"http://127.0.0.1:{port}/v1"})
        async with orch_mod.Orchestrator(
            cfg, registry=registry, api_key="k", handler=seen.append
        ) as orch:
            result = await orch.run(thread_id="thread_1", assistant_id="asst_1")
    finally:
        await runner.cleanup()
    assert result.outcome == "completed"
    unknown = of(seen, events.UnknownStatus)
    assert [u.status for u in unknown] == ["paused_for_review"]
    assert [e.current for e in of(seen, events.StatusChanged)] == [
        "queued",
        "paused_for_review",
        "completed",
    ]


async def test_caller_cancellation_cancels_the_run(
    client: AssistantsClient, registry: tools.ToolRegistry
) -> None:
    assistant = await make_assistant(client, registry)
    thread = await client.create_thread()
    created: list[models.Run] = []
    started = anyio.Event()

    def on_status(event: events.Event) -> None:
        if isinstance(event, events.RunCreated):
            created.append(event.run)
        if isinstance(event, events.StatusChanged) and event.current == "in_progress":
            started.set()

    async with orch_mod.Orchestrator(make_config(), registry=registry, client=client) as orch:
        orch.on(events.RunCreated, events.StatusChanged)(on_status)
        async with anyio.create_task_group() as tg:

            async def run_it() -> None:
                await orch.run(
                    thread_id=thread.id, assistant_id=assistant, metadata=script({"stall": True})
                )

            tg.start_soon(run_it)
            await started.wait()
            tg.cancel_scope.cancel()
    run = created[0]
    with anyio.fail_after(5):
        status = (await client.retrieve_run(thread.id, run.id)).status
        while status != "cancelled":  # cancelling, then cancelled after the emulator's delay
            await anyio.sleep(0.01)
            status = (await client.retrieve_run(thread.id, run.id)).status


@pytest.mark.parametrize("policy", ["error", "cancel", "wait"])
async def test_if_active_policies(
    policy: str, client: AssistantsClient, registry: tools.ToolRegistry
) -> None:
    assistant = await make_assistant(client, registry)
    thread = await client.create_thread()
    blocker_script = (
        [{"stall": True}] if policy != "wait" else [{"think_ms": 150}, {"message": "ok"}]
    )
    blocker = await client.create_run(
        thread.id,
        models.CreateRun(
            assistant_id=assistant, metadata={"emulator_script": json.dumps(blocker_script)}
        ),
    )
    cfg = make_config(run={"if_active": policy})
    async with orch_mod.Orchestrator(cfg, registry=registry, client=client) as orch:
        if policy == "error":
            with pytest.raises(errors.ThreadBusyError) as info:
                await orch.run(thread_id=thread.id, assistant_id=assistant)
            assert info.value.run_id == blocker.id
            return
        result = await orch.run(thread_id=thread.id, assistant_id=assistant)
    assert result.ok
    first = await client.retrieve_run(thread.id, blocker.id)
    assert first.status == ("cancelled" if policy == "cancel" else "completed")


async def test_stream_mode_uses_two_run_requests_per_tool_round(
    emu: Emulator, client: AssistantsClient, registry: tools.ToolRegistry
) -> None:
    assistant = await make_assistant(client, registry)
    thread = await client.create_thread()
    emu.reset_stats() if hasattr(emu, "reset_stats") else None
    before = emu.stats().count(contains=RUN_ROUTES)
    cfg = make_config(poll={"mode": "stream"})
    async with orch_mod.Orchestrator(cfg, registry=registry, client=client) as orch:
        result = await orch.run(
            thread_id=thread.id,
            assistant_id=assistant,
            metadata=script({"tool_calls": [{"name": "add", "arguments": {"a": 1, "b": 2}}]}),
        )
    assert result.ok
    assert result.reply
    assert emu.stats().count(contains=RUN_ROUTES) - before == 2


async def test_poll_mode_retrievals_stay_within_the_backoff_bound(
    emu: Emulator, registry: tools.ToolRegistry
) -> None:
    """With the server asking for 100 ms between polls, a run of ~0.5 s is polled a few times."""
    emu.configure(poll_after_ms=100, queue_delay=0.05, think_delay=0.4)
    cfg = make_config(poll={"initial_interval": 0.001, "max_interval": 1.0})
    api = msgspec.structs.replace(cfg.api, base_url=emu.base_url)
    async with AssistantsClient(api, cfg.retry, api_key="k") as c:
        start = anyio.current_time()
        result, _ = await drive(c, registry, cfg, metadata=script({"message": "hi"}))
        elapsed = anyio.current_time() - start
    assert result.ok
    retrievals = emu.stats().count("GET /v1/threads/{thread_id}/runs/{run_id}")
    # The server hint is a floor on every interval: at most one poll per 100 ms, plus one.
    assert 1 <= retrievals <= elapsed / 0.1 + 1


async def test_adopt_and_stream_iteration(
    client: AssistantsClient, registry: tools.ToolRegistry
) -> None:
    assistant = await make_assistant(client, registry)
    thread = await client.create_thread()
    run = await client.create_run(thread.id, models.CreateRun(assistant_id=assistant))
    async with orch_mod.Orchestrator(make_config(), registry=registry, client=client) as orch:
        adopted = await orch.adopt(thread.id, run.id)
        assert adopted.ok
        assert adopted.run.id == run.id
        thread2 = await client.create_thread()
        kinds = [type(ev) async for ev in orch.stream(thread_id=thread2.id, assistant_id=assistant)]
    assert kinds[0] is events.RunCreated
    assert kinds[-1] is events.RunFinished
    assert events.ToolCallsRequested in kinds


async def test_create_thread_and_run(
    client: AssistantsClient, registry: tools.ToolRegistry
) -> None:
    assistant = await make_assistant(client, registry)
    async with orch_mod.Orchestrator(make_config(), registry=registry, client=client) as orch:
        result = await orch.create_thread_and_run(
            assistant_id=assistant,
            messages=[models.MessageRequest(role="user", content="hi")],
        )
    assert result.ok
    assert result.run.thread_id.startswith("thread_")


@pytest.mark.parametrize("mode", ["poll", "stream"])
async def test_completed_steps_are_reported_in_both_modes(
    mode: str, client: AssistantsClient, registry: tools.ToolRegistry
) -> None:
    cfg = make_config(poll={"mode": mode, "fetch_steps": True})
    result, seen = await drive(
        client,
        registry,
        cfg,
        metadata=script({"tool_calls": [{"name": "add", "arguments": {"a": 1, "b": 2}}]}),
    )
    assert result.ok
    steps = [e.step for e in of(seen, events.StepCompleted)]
    assert [s.type for s in steps] == ["tool_calls", "message_creation"]
    assert len({s.id for s in steps}) == 2
    details = steps[0].step_details
    assert details is not None
    assert details.tool_calls is not None
    function = details.tool_calls[0].function
    assert function is not None
    assert function.output == "3"


# --- regressions found in review ---------------------------------------------------------


@pytest.mark.parametrize("mode", ["poll", "stream"])
async def test_run_timeout_holds_while_the_run_keeps_asking_for_tools(
    mode: str, client: AssistantsClient, registry: tools.ToolRegistry, calls: Calls
) -> None:
    rounds = [{"tool_calls": [{"name": "add", "arguments": {"a": i, "b": 0}}]} for i in range(40)]
    cfg = make_config(poll={"mode": mode}, run={"run_timeout": 0.3})
    with anyio.fail_after(20):
        result, _ = await drive(client, registry, cfg, metadata=script(*rounds))
    assert result.outcome == "timed_out"
    assert result.run.status == "cancelled"
    assert result.rounds < 40


async def test_a_stalled_stream_is_bounded_by_the_deadline(
    emu: Emulator, registry: tools.ToolRegistry
) -> None:
    """The stream stays open with nothing to say; the deadline, not the read timeout, ends it."""
    cfg = make_config(poll={"mode": "stream"}, run={"run_timeout": 0.3})
    api = msgspec.structs.replace(cfg.api, base_url=emu.base_url, timeout=60.0)
    async with AssistantsClient(api, cfg.retry, api_key="k") as c:
        with anyio.fail_after(20):
            result, _ = await drive(c, registry, cfg, metadata=script({"stall": True}))
    assert result.outcome == "timed_out"


async def test_reply_after_a_stream_cut_is_the_whole_message(
    client: AssistantsClient, registry: tools.ToolRegistry
) -> None:
    cfg = make_config(poll={"mode": "stream"})
    text = "A fairly long reply, so that the cut can land in the middle of it. " * 5
    result, seen = await drive(
        client,
        registry,
        cfg,
        metadata={**script({"message": text}), **faults(fault_stream_cut=1.0)},
    )
    assert result.ok
    assert of(seen, events.StreamFallback)
    assert result.reply == text.strip() or result.reply == text


async def test_attempt_reaches_tools_and_recreated_runs_do_not_repost_messages(
    client: AssistantsClient, calls: Calls
) -> None:
    registry = tools.ToolRegistry()
    attempts: list[int] = []

    @registry.tool
    def note(ctx: tools.ToolContext) -> str:
        """Record the attempt."""
        attempts.append(ctx.attempt)
        return "ok"

    assistant = await client.create_assistant(model="m", tools=registry.definitions())
    thread = await client.create_thread()
    cfg = make_config(
        run={
            "retry_failed_codes": ["server_error"],
            "retry_failed_attempts": 1,
            "retry_failed_backoff": 0.01,
        }
    )
    async with orch_mod.Orchestrator(cfg, registry=registry, client=client) as orch:
        body = models.CreateRun(
            assistant_id=assistant.id,
            additional_messages=[models.MessageRequest(role="user", content="once")],
            metadata=script(
                {"tool_calls": [{"name": "note", "arguments": {}}]}, {"fail": "server_error"}
            ),
        )
        result = await orch.driver.create(thread.id, body, emit=orch.subscribers.emit, attempt=3)
    assert result.outcome == "failed"
    assert attempts == [3, 3]  # both runs' tool calls saw the job's attempt
    page = await client.list_messages(thread.id)
    assert [m.text for m in page.data if m.role == "user"] == ["once"]


async def test_unanswerable_action_is_reported_and_waited_out(
    registry: tools.ToolRegistry,
) -> None:
    polls = 0
    submits = 0

    async def create(request: web.Request) -> web.Response:
        return web.json_response(
            run_json("requires_action", required_action={"type": "approve_plan"})
        )

    async def retrieve(request: web.Request) -> web.Response:
        nonlocal polls
        polls += 1
        if polls < 4:
            return web.json_response(
                run_json("requires_action", required_action={"type": "approve_plan"})
            )
        return web.json_response(run_json("completed", required_action=None))

    async def submit(request: web.Request) -> web.Response:
        nonlocal submits
        submits += 1
        return web.json_response({"error": {"message": "no", "type": "x"}}, status=400)

    async def messages(request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [], "has_more": False})

    app = web.Application()
    app.router.add_post("/v1/threads/{t}/runs", create)
    app.router.add_get("/v1/threads/{t}/runs/{r}", retrieve)
    app.router.add_post("/v1/threads/{t}/runs/{r}/submit_tool_outputs", submit)
    app.router.add_get("/v1/threads/{t}/messages", messages)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    seen: list[events.Event] = []
    try:
        cfg = make_config(api={"base_url": f"http://127.0.0.1:{runner.addresses[0][1]}/v1"})
        async with orch_mod.Orchestrator(
            cfg, registry=registry, api_key="k", handler=seen.append
        ) as orch:
            result = await orch.run(thread_id="thread_1", assistant_id="asst_1")
    finally:
        await runner.cleanup()
    assert result.outcome == "completed"
    assert submits == 0
    assert [u.status for u in of(seen, events.UnknownStatus)] == ["requires_action:approve_plan"]


async def test_leaving_a_stream_early_cancels_its_run(
    client: AssistantsClient, registry: tools.ToolRegistry
) -> None:
    assistant = await make_assistant(client, registry)
    thread = await client.create_thread()
    run_id = None
    with anyio.fail_after(20):
        async with orch_mod.Orchestrator(make_config(), registry=registry, client=client) as orch:
            async for event in orch.stream(
                thread_id=thread.id, assistant_id=assistant, metadata=script({"stall": True})
            ):
                if isinstance(event, events.RunCreated):
                    run_id = event.run.id
                    break
    assert run_id is not None
    run = await client.retrieve_run(thread.id, run_id)
    assert run.status in {"cancelling", "cancelled"}
