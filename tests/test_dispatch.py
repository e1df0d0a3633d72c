"""dispatch(): concurrency, deadlines, error outputs, on_error, ordering, context injection.

Concurrency is shown by overlap (every call has started before any may finish), never by
timing; a call that would wait forever if run serially fails on a bounded wait instead of
hanging the suite.
"""

import asyncio
import functools
import json
import logging
import os
import threading
import time
from typing import Any

import anyio
import anyio.lowlevel
import msgspec
import pytest

from orchestrator import config, errors, tools
from orchestrator.protocols.assistants import models
from orchestrator.tools import dispatch

pytestmark = pytest.mark.anyio

SETTINGS = config.ToolsConfig()
#: Seconds a test waits for something that should happen at once; only reached on failure.
PATIENCE = 5.0


def call(name: str, arguments: str = "{}", call_id: str | None = None) -> models.RequiredToolCall:
    return models.RequiredToolCall(
        id=call_id or f"call_{name}", function=models.FunctionCall(name, arguments)
    )


async def run(
    calls: list[models.RequiredToolCall],
    registry: tools.ToolRegistry,
    settings: config.ToolsConfig = SETTINGS,
    **kwargs: Any,
) -> list[dispatch.ToolResult]:
    return await dispatch.dispatch(
        calls, registry, settings, run_id="run_1", thread_id="thread_1", **kwargs
    )


def error_of(result: dispatch.ToolResult) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(result.output)["error"]
    assert result.error is not None
    assert (body["type"], body["message"]) == (result.error.type, result.error.message)
    assert not result.ok
    return body


# --- outputs and error paths ------------------------------------------------------------------


async def test_results_in_call_order_with_every_error_kind() -> None:
    registry = tools.ToolRegistry()

    @registry.tool
    def add(a: int, b: int = 1) -> int:
        return a + b

    @registry.tool
    async def boom() -> None:
        raise ValueError("Ошибка: not today")

    @registry.tool
    def silent() -> None:
        raise KeyError

    @registry.tool
    def bad_return() -> object:
        return object()

    calls = [
        call("add", '{"a": 2}', "c0"),
        call("add", '{"a": 2', "c1"),
        call("add", '{"a": "two"}', "c2"),
        call("nope", "{}", "c3"),
        models.RequiredToolCall(id="c4", type="code_interpreter"),
        call("boom", "", "c5"),
        call("silent", "{}", "c6"),
        call("bad_return", "{}", "c7"),
        call("add", '{"a": 40, "b": 2}', "c8"),
    ]
    results = await run(calls, registry)
    assert [r.tool_call_id for r in results] == [c.id for c in calls]
    assert [r.name for r in results] == [
        "add", "add", "add", "nope", "", "boom", "silent", "bad_return", "add",
    ]  # fmt: skip
    assert (results[0].output, results[0].ok, results[0].error) == ("3", True, None)
    assert results[8].output == "42"

    kinds = [error_of(r)["type"] for r in results[1:8]]
    assert kinds == [
        "invalid_json",
        "invalid_arguments",
        "unknown_tool",
        "unsupported_call_type",
        "tool_exception",
        "tool_exception",
        "tool_exception",
    ]
    assert error_of(results[1])["message"].startswith("the arguments are not valid JSON: ")
    assert results[2].output == (
        '{"error":{"type":"invalid_arguments","message":"Expected `int`, got `str` - at `$.a`"}}'
    )
    assert error_of(results[3])["message"] == (
        "no tool named 'nope'; available tools: add, bad_return, boom, silent"
    )
    assert "code_interpreter" in error_of(results[4])["message"]
    # non-ASCII stays readable (not \\u-escaped) in the output the model gets
    assert "ValueError: Ошибка: not today" in results[5].output
    assert error_of(results[6])["message"] == "KeyError"
    assert "return value (object) is not JSON" in error_of(results[7])["message"]
    assert all("traceback" not in json.loads(r.output)["error"] for r in results[1:8])
    assert all(r.duration >= 0 for r in results)
    assert results[0].to_output() == models.ToolOutput(tool_call_id="c0", output="3")


async def test_no_calls() -> None:
    assert await run([], tools.ToolRegistry()) == []


async def test_traceback_only_when_configured() -> None:
    registry = tools.ToolRegistry()

    @registry.tool
    def fails() -> None:
        raise RuntimeError("deep inside")

    settings = config.ToolsConfig(include_traceback=True)
    [result] = await run([call("fails")], registry, settings)
    body = error_of(result)
    assert body["message"] == "RuntimeError: deep inside"
    assert body["traceback"].startswith("Traceback (most recent call last)")
    assert "in fails" in body["traceback"]


async def test_long_error_messages_are_cut() -> None:
    registry = tools.ToolRegistry()

    @registry.tool
    def loud() -> None:
        raise ValueError("é" * 50_000)

    [result] = await run([call("loud")], registry)
    message = error_of(result)["message"]
    assert len(message) <= dispatch.MAX_ERROR_MESSAGE
    assert message.endswith("chars]")


async def test_large_and_non_ascii_outputs() -> None:
    registry = tools.ToolRegistry()
    text = "naïve café 日本語 🙂 " * 5_000  # 95,000 characters

    @registry.tool
    def big() -> str:
        return text

    @registry.tool
    def unicode() -> dict[str, str]:
        return {"greeting": "こんにちは", "emoji": "🙂"}

    settings = config.ToolsConfig(max_output_chars=1_000)
    big_result, small = await run([call("big"), call("unicode")], registry, settings)
    assert big_result.ok
    assert len(big_result.output) <= 1_000
    kept = big_result.output.index("…[truncated ")
    assert big_result.output[:kept] == text[:kept]
    assert big_result.output.endswith(f"…[truncated {len(text) - kept} chars]")
    assert json.loads(small.output) == {"greeting": "こんにちは", "emoji": "🙂"}
    assert "こんにちは" in small.output


# --- context ----------------------------------------------------------------------------------


async def test_context_is_injected() -> None:
    registry = tools.ToolRegistry()
    seen: list[tools.ToolContext] = []

    @registry.tool
    async def aware(x: int, ctx: tools.ToolContext) -> int:
        seen.append(ctx)
        return x

    @registry.tool
    def aware_sync(ctx: tools.ToolContext, /) -> str:
        seen.append(ctx)
        return ctx.tool_call_id

    deadline = time.time() + 600
    results = await run(
        [call("aware", '{"x": 1}', "ca"), call("aware_sync", "{}", "cs")],
        registry,
        deadline=deadline,
        attempt=2,
    )
    assert [r.output for r in results] == ["1", "cs"]
    by_call = {c.tool_call_id: c for c in seen}
    for call_id, name in (("ca", "aware"), ("cs", "aware_sync")):
        ctx = by_call[call_id]
        assert (ctx.run_id, ctx.thread_id, ctx.tool_name, ctx.attempt) == (
            "run_1", "thread_1", name, 2,
        )  # fmt: skip
        assert ctx.deadline is not None
        # bounded by the tool timeout here, and never past the deadline minus the margin
        assert ctx.deadline <= deadline - SETTINGS.deadline_margin


# --- concurrency ------------------------------------------------------------------------------


async def test_async_calls_overlap() -> None:
    registry = tools.ToolRegistry()
    n = 6
    started = 0
    all_started = anyio.Event()

    @registry.tool
    async def meet() -> bool:
        nonlocal started
        started += 1
        if started == n:
            all_started.set()
        # serial execution would never get here for the first call: it would time out
        with anyio.fail_after(PATIENCE):
            await all_started.wait()
        return True

    results = await run([call("meet", call_id=f"c{i}") for i in range(n)], registry)
    assert [r.output for r in results] == ["true"] * n


async def test_sync_calls_overlap_in_threads() -> None:
    registry = tools.ToolRegistry()
    n = 5
    barrier = threading.Barrier(n, timeout=PATIENCE)
    threads: set[int] = set()

    @registry.tool
    def meet() -> bool:
        barrier.wait()  # raises BrokenBarrierError unless all n are in at once
        threads.add(threading.get_ident())
        return True

    results = await run([call("meet", call_id=f"c{i}") for i in range(n)], registry)
    assert [r.output for r in results] == ["true"] * n
    assert len(threads) == n
    assert threading.get_ident() not in threads


async def test_a_sleeping_sync_tool_does_not_stop_the_loop() -> None:
    registry = tools.ToolRegistry()
    ticked = threading.Event()
    ticks_while_sleeping = 0
    tool_running = threading.Event()

    @registry.tool
    def sleeper() -> bool:
        tool_running.set()
        # blocks this thread until the heartbeat on the event loop has ticked a few times
        return ticked.wait(PATIENCE)

    async def heartbeat() -> None:
        nonlocal ticks_while_sleeping
        while True:
            await anyio.sleep(0.005)
            if tool_running.is_set():
                ticks_while_sleeping += 1
                if ticks_while_sleeping >= 3:
                    ticked.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(heartbeat)
        [result] = await run([call("sleeper")], registry)
        tg.cancel_scope.cancel()
    assert result.output == "true"
    assert ticks_while_sleeping >= 3


async def test_concurrency_cap_and_shared_limiter() -> None:
    registry = tools.ToolRegistry()
    in_flight = 0
    peak = 0
    lock = threading.Lock()
    pair_in = threading.Event()

    @registry.tool
    def work(cap: int) -> None:
        nonlocal in_flight, peak
        with lock:
            in_flight += 1
            peak = max(peak, in_flight)
            if in_flight == cap:
                pair_in.set()
        try:
            if cap > 1:
                pair_in.wait(PATIENCE)  # with a cap of 2, the first two meet
        finally:
            with lock:
                in_flight -= 1

    settings = config.ToolsConfig(concurrency=2)
    await run([call("work", '{"cap": 2}', f"c{i}") for i in range(6)], registry, settings)
    assert peak == 2

    # one limiter shared by two concurrent dispatches (two runs) caps them together
    peak = 0
    shared = anyio.CapacityLimiter(1)
    async with anyio.create_task_group() as tg:
        for run_no in range(2):
            calls = [call("work", '{"cap": 1}', f"r{run_no}c{i}") for i in range(3)]
            tg.start_soon(functools.partial(run, calls, registry, limiter=shared))
    assert peak == 1


async def test_one_slow_or_failing_call_does_not_disturb_the_others() -> None:
    registry = tools.ToolRegistry()
    release = anyio.Event()

    @registry.tool(timeout=0.05)
    async def slow() -> None:
        await anyio.sleep_forever()

    @registry.tool
    def failing() -> None:
        raise RuntimeError("no")

    @registry.tool
    async def waits_for_the_others() -> str:
        with anyio.fail_after(PATIENCE):
            await release.wait()
        return "fine"

    async def releaser(result: dispatch.ToolResult) -> None:
        if result.name == "slow":  # the slow call timed out: now let the last one finish
            release.set()

    results = await run(
        [call("slow"), call("failing"), call("waits_for_the_others")],
        registry,
        on_result=releaser,
    )
    assert [r.error.type if r.error else r.output for r in results] == [
        "timeout",
        "tool_exception",
        "fine",
    ]


# --- timeouts and deadlines -------------------------------------------------------------------


async def test_async_timeout_cancels_the_tool() -> None:
    registry = tools.ToolRegistry()
    cancelled = False

    @registry.tool(timeout=0.05)
    async def hangs() -> None:
        nonlocal cancelled
        try:
            await anyio.sleep_forever()
        finally:
            cancelled = True

    [result] = await run([call("hangs")], registry)
    assert error_of(result) == {
        "type": "timeout",
        "message": "the tool did not finish within 0.05 s (its timeout)",
    }
    assert cancelled


async def test_sync_timeout_abandons_the_thread(caplog: pytest.LogCaptureFixture) -> None:
    registry = tools.ToolRegistry()
    release = threading.Event()
    finished = threading.Event()

    @registry.tool
    def stuck() -> None:
        release.wait(PATIENCE)
        finished.set()

    settings = config.ToolsConfig(timeout=0.05)
    try:
        with caplog.at_level(logging.WARNING, logger="orchestrator.tools.dispatch"):
            [result] = await run([call("stuck", call_id="c_stuck")], registry, settings)
        assert error_of(result)["type"] == "timeout"
        assert not finished.is_set()  # dispatch returned while the thread still runs
        [record] = [r for r in caplog.records if "abandoned" in r.getMessage()]
        assert getattr(record, "tool_call_id", None) == "c_stuck"
        assert getattr(record, "run_id", None) == "run_1"
    finally:
        release.set()
    assert await anyio.to_thread.run_sync(finished.wait, PATIENCE)


async def test_deadline_already_past_runs_nothing() -> None:
    registry = tools.ToolRegistry()
    ran = False

    @registry.tool
    def effect() -> None:
        nonlocal ran
        ran = True

    # the deadline is still ahead, but inside the safety margin
    deadline = time.time() + SETTINGS.deadline_margin / 2
    results = await run([call("effect", call_id=f"c{i}") for i in range(2)], registry,
                        deadline=deadline)  # fmt: skip
    for result in results:
        assert error_of(result) == {
            "type": "timeout",
            "message": "no time was left before the run's deadline; the tool was not started",
        }
    assert not ran


async def test_deadline_bounds_the_tool_timeout() -> None:
    registry = tools.ToolRegistry()
    seen: list[tools.ToolContext] = []

    @registry.tool(timeout=60)
    async def hangs(ctx: tools.ToolContext) -> None:
        seen.append(ctx)
        await anyio.sleep_forever()

    deadline = time.time() + SETTINGS.deadline_margin + 0.1
    [result] = await run([call("hangs")], registry, deadline=deadline)
    body = error_of(result)
    assert body["type"] == "timeout"
    assert body["message"].endswith("(the run's deadline)")
    [ctx] = seen
    assert ctx.deadline is not None
    assert ctx.deadline <= deadline - SETTINGS.deadline_margin


async def test_waiting_for_a_slot_counts_against_the_deadline() -> None:
    registry = tools.ToolRegistry()
    ran = False

    @registry.tool
    async def effect() -> None:
        nonlocal ran
        ran = True

    limiter = anyio.CapacityLimiter(1)
    async with limiter:  # another run holds the only slot
        deadline = time.time() + SETTINGS.deadline_margin + 0.05
        [result] = await run([call("effect")], registry, limiter=limiter, deadline=deadline)
    assert error_of(result) == {
        "type": "timeout",
        "message": "no free slot was left before the run's deadline; the tool was not started",
    }
    assert not ran


# --- on_error, on_result, cancellation --------------------------------------------------------


def failing_registry(on_error: tools.OnError | None) -> tuple[tools.ToolRegistry, list[str]]:
    registry = tools.ToolRegistry()
    finished: list[str] = []

    @registry.tool(on_error=on_error)
    def breaks() -> None:
        raise RuntimeError("broken")

    @registry.tool
    async def works(ctx: tools.ToolContext) -> str:
        await anyio.lowlevel.checkpoint()
        finished.append(ctx.tool_call_id)
        return "ok"

    return registry, finished


@pytest.mark.parametrize(
    ("global_policy", "tool_policy", "raises"),
    [
        ("output", None, False),
        ("raise", None, True),
        ("output", "raise", True),
        ("raise", "output", False),
    ],
)
async def test_on_error(
    global_policy: tools.OnError, tool_policy: tools.OnError | None, raises: bool
) -> None:
    registry, finished = failing_registry(tool_policy)
    recorded: list[str] = []

    async def record(result: dispatch.ToolResult) -> None:
        recorded.append(result.tool_call_id)

    settings = config.ToolsConfig(on_error=global_policy)
    calls = [call("works", call_id="w1"), call("breaks", call_id="b"), call("works", call_id="w2")]
    if raises:
        with pytest.raises(errors.ToolFailure, match="tool 'breaks' failed") as info:
            await run(calls, registry, settings, on_result=record)
        assert (info.value.tool_call_id, info.value.tool_name) == ("b", "breaks")
    else:
        results = await run(calls, registry, settings, on_result=record)
        assert [r.ok for r in results] == [True, False, True]
    # the other calls finished, and every result was recorded either way
    assert sorted(finished) == ["w1", "w2"]
    assert sorted(recorded) == ["b", "w1", "w2"]


async def test_unknown_tool_follows_the_global_policy() -> None:
    settings = config.ToolsConfig(on_error="raise")
    with pytest.raises(errors.ToolFailure) as info:
        await run([call("ghost", call_id="g")], tools.ToolRegistry(), settings)
    assert (info.value.tool_call_id, info.value.tool_name) == ("g", "ghost")


async def test_on_result_sees_each_result_before_dispatch_returns() -> None:
    registry = tools.ToolRegistry()

    @registry.tool
    def echo(x: int) -> int:
        return x

    recorded: list[dispatch.ToolResult] = []

    async def record(result: dispatch.ToolResult) -> None:
        await anyio.lowlevel.checkpoint()
        recorded.append(result)

    results = await run([call("echo", f'{{"x": {i}}}', f"c{i}") for i in range(4)], registry,
                        on_result=record)  # fmt: skip
    assert sorted(recorded, key=lambda r: r.tool_call_id) == results


async def test_on_result_errors_propagate_unwrapped() -> None:
    registry = tools.ToolRegistry()

    @registry.tool
    def echo() -> str:
        return "x"

    async def broken_store(result: dispatch.ToolResult) -> None:
        raise errors.StoreError("disk full")

    with pytest.raises(errors.StoreError, match="disk full"):
        await run([call("echo")], registry, on_result=broken_store)


async def test_cancelling_dispatch_propagates_and_cancels_the_calls() -> None:
    registry = tools.ToolRegistry()
    started = anyio.Event()
    cleaned_up = False
    returned = False

    @registry.tool
    async def forever() -> None:
        nonlocal cleaned_up
        started.set()
        try:
            await anyio.sleep_forever()
        finally:
            cleaned_up = True

    async def caller() -> None:
        nonlocal returned
        await run([call("forever")], registry)
        returned = True

    async with anyio.create_task_group() as tg:
        tg.start_soon(caller)
        with anyio.fail_after(PATIENCE):
            await started.wait()
        tg.cancel_scope.cancel()
    assert cleaned_up
    assert not returned


async def test_the_registry_decides_by_name_at_call_time() -> None:
    registry = tools.ToolRegistry()
    results = await run([call("late")], registry)
    assert error_of(results[0])["type"] == "unknown_tool"

    @registry.tool
    def late() -> str:
        return "here"

    assert [r.output for r in await run([call("late")], registry)] == ["here"]


def test_results_are_structs() -> None:
    result = dispatch.ToolResult(tool_call_id="c", name="n", output="o", duration=0.1)
    decoded = msgspec.json.decode(msgspec.json.encode(result), type=dispatch.ToolResult)
    assert decoded == result
    assert decoded.ok
    error = dispatch.ToolError("timeout", "late")
    assert dispatch.error_output(error) == '{"error":{"type":"timeout","message":"late"}}'


# --- hostile input (issue 15 items 1 and 3, issue 10 defect 8) --------------------------------


@pytest.mark.parametrize(
    "arguments",
    [
        # nested far beyond the recursion limit, under a key the tool ignores
        '{"text": "a", "ignored": ' + "[" * 5_000 + "]" * 5_000 + "}",
        '{"ignored": ' + '{"a": ' * 5_000 + "1" + "}" * 5_000 + ', "text": "a"}',
    ],
)
async def test_deeply_nested_arguments_are_an_invalid_arguments_output(arguments: str) -> None:
    registry = tools.ToolRegistry()

    @registry.tool
    def echo(text: str) -> str:
        return text

    [result, fine] = await run(
        [call("echo", arguments, "c_deep"), call("echo", '{"text": "ok"}', "c_ok")], registry
    )
    assert error_of(result)["type"] == "invalid_arguments"
    assert "nested too deeply" in result.output
    assert fine.output == "ok"


async def test_a_tool_raising_cancelled_error_itself_is_an_error_output() -> None:
    registry = tools.ToolRegistry()
    siblings_done = 0

    @registry.tool
    async def awaits_a_cancelled_future() -> str:
        future = asyncio.get_running_loop().create_future()
        future.cancel()  # its owner cancelled it
        await future
        return "unreachable"

    @registry.tool
    def raises_it_in_a_thread() -> str:
        raise asyncio.CancelledError

    @registry.tool
    async def sibling() -> str:
        nonlocal siblings_done
        for _ in range(3):
            await anyio.lowlevel.checkpoint()
        siblings_done += 1
        return "fine"

    calls = [
        call("awaits_a_cancelled_future"),
        call("sibling", call_id="s1"),
        call("raises_it_in_a_thread"),
        call("sibling", call_id="s2"),
    ]
    with anyio.fail_after(PATIENCE):
        results = await run(calls, registry)
    assert [r.tool_call_id for r in results] == [c.id for c in calls]  # one result per call
    assert error_of(results[0])["type"] == "tool_exception"
    assert "CancelledError" in results[0].output
    assert error_of(results[2])["type"] == "tool_exception"
    assert [results[1].output, results[3].output] == ["fine", "fine"]
    assert siblings_done == 2


async def test_a_real_cancellation_still_propagates_through_a_sync_call() -> None:
    registry = tools.ToolRegistry()
    started = threading.Event()
    release = threading.Event()

    @registry.tool
    def blocking() -> str:
        started.set()
        release.wait(PATIENCE)
        return "late"

    returned = False

    async def caller() -> None:
        nonlocal returned
        await run([call("blocking")], registry)
        returned = True

    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(caller)
            assert await anyio.to_thread.run_sync(started.wait, PATIENCE)
            tg.cancel_scope.cancel()
    finally:
        release.set()
    assert not returned


async def test_outputs_with_lone_surrogates_are_made_encodable() -> None:
    registry = tools.ToolRegistry()
    name = os.fsdecode(b"report-\xff.txt")  # what listing a directory of foreign names gives
    assert "\udcff" in name

    @registry.tool
    def list_files() -> str:
        return name

    @registry.tool
    async def open_file() -> str:
        raise FileNotFoundError(f"no such file: {name}")

    settings = msgspec.structs.replace(SETTINGS, include_traceback=True)
    results = await run([call("list_files"), call("open_file")], registry, settings)
    ok, failed = results
    assert ok.output == "report-\ufffd.txt"
    assert "report-\ufffd.txt" in error_of(failed)["message"]
    assert "\ufffd" in error_of(failed)["traceback"]
    # what the ledger stores and what the submit sends both encode
    msgspec.json.encode(results)
    body = models.SubmitToolOutputs(tool_outputs=[r.to_output() for r in results])
    assert json.loads(models.encode(body))["tool_outputs"][0]["output"] == "report-\ufffd.txt"


async def test_an_unknown_tool_name_with_lone_surrogates_is_encodable() -> None:
    results = await run([call("\ud800tool")], tools.ToolRegistry())
    assert error_of(results[0])["type"] == "unknown_tool"
    msgspec.json.encode(results)


# --- the guard: no tool starts once the right to act is gone ------------------------------------


@pytest.mark.parametrize("is_async", [False, True])
async def test_a_failing_guard_starts_no_tool_and_frees_every_slot(is_async: bool) -> None:
    reg = tools.ToolRegistry()
    started: list[str] = []

    if is_async:

        @reg.tool(name="effect")
        async def effect_async(key: str) -> str:
            """A side effect.

            Args:
                key: Which.
            """
            started.append(key)
            return key

    else:

        @reg.tool(name="effect")
        def effect_sync(key: str) -> str:
            """A side effect.

            Args:
                key: Which.
            """
            started.append(key)
            return key

    def gone() -> None:
        raise errors.LeaseLost("job j: the lease was not renewed in time", job_id="j", epoch=1)

    limiter = anyio.CapacityLimiter(2)
    calls = [call("effect", json.dumps({"key": k}), f"call_{k}") for k in "abc"]
    with pytest.raises((errors.LeaseLost, ExceptionGroup)) as info:
        await run(calls, reg, limiter=limiter, guard=gone)
    leaves = errors.leaves(info.value)
    assert leaves
    assert all(isinstance(e, errors.LeaseLost) for e in leaves)
    assert started == []
    assert limiter.borrowed_tokens == 0


async def test_the_guard_is_checked_again_in_a_sync_tools_thread() -> None:
    """A sync body may start late (a busy or paused process): its thread checks first."""
    reg = tools.ToolRegistry()
    started: list[str] = []
    checks: list[str] = []

    @reg.tool
    def effect(key: str) -> str:
        """A side effect.

        Args:
            key: Which.
        """
        started.append(key)
        return key

    def guard() -> None:
        checks.append(threading.current_thread().name)
        if len(checks) > 1:  # passes on the event loop, fails in the tool's thread
            raise errors.LeaseLost("lapsed", job_id="j", epoch=1)

    with pytest.raises(errors.LeaseLost):
        await run([call("effect", '{"key": "a"}')], reg, guard=guard)
    assert started == []
    assert len(checks) == 2
    assert checks[0] != checks[1]


async def test_a_slot_that_comes_after_the_cutoff_is_given_back(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A sync tool's slot goes to its thread only once the thread is sure to start."""
    reg = tools.ToolRegistry()

    @reg.tool
    def work() -> str:
        """Do work."""
        return "ok"

    cutoff = time.time() + 100
    reads = iter([cutoff - 10])  # the first read is before the cutoff, every later one after

    class Clock:
        perf_counter = staticmethod(time.perf_counter)
        monotonic = staticmethod(time.monotonic)

        @staticmethod
        def time() -> float:
            return next(reads, cutoff + 10)

    monkeypatch.setattr(dispatch, "time", Clock)
    limiter = anyio.CapacityLimiter(2)
    settings = config.ToolsConfig(concurrency=2, deadline_margin=0.0)
    [result] = await run([call("work")], reg, settings, deadline=cutoff, limiter=limiter)
    assert result.error is not None
    assert result.error.type == "timeout"
    assert limiter.borrowed_tokens == 0
