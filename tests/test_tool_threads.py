"""Sync tool bodies on daemon threads: a timed-out one keeps its slot until it returns, the
abandoned ones are capped, and none holds up process exit (issue 10, defect 9)."""

import subprocess
import sys
import textwrap
import threading
from collections.abc import Callable

import anyio
import pytest

from orchestrator import config, tools
from orchestrator.protocols.assistants import models
from orchestrator.tools import dispatch
from orchestrator.tools import threads as tool_threads

pytestmark = pytest.mark.anyio

#: Seconds a test waits for something that should happen at once; only reached on failure.
PATIENCE = 5.0


def call(name: str, call_id: str) -> models.RequiredToolCall:
    return models.RequiredToolCall(id=call_id, function=models.FunctionCall(name, "{}"))


async def wait_until(condition: Callable[[], bool]) -> None:
    with anyio.fail_after(PATIENCE):
        while not condition():  # noqa: ASYNC110 (a thread's state: no event to wait on)
            await anyio.sleep(0.005)


def stuck_registry(release: threading.Event) -> tools.ToolRegistry:
    registry = tools.ToolRegistry()

    @registry.tool
    def stuck() -> str:
        release.wait(PATIENCE)
        return "late"

    @registry.tool
    def quick() -> str:
        return "quick"

    @registry.tool
    async def quick_async() -> str:
        return "async"

    return registry


async def test_a_timed_out_sync_tool_keeps_its_slot_until_its_thread_returns() -> None:
    release = threading.Event()
    registry = stuck_registry(release)
    settings = config.ToolsConfig(timeout=0.05, concurrency=1)
    limiter = anyio.CapacityLimiter(1)
    before = tool_threads.abandoned.count  # other tests' threads may still be finishing
    try:
        [result] = await dispatch.dispatch(
            [call("stuck", "c1")], registry, settings, run_id="r", thread_id="t", limiter=limiter
        )
        assert result.error is not None
        assert result.error.type == "timeout"
        assert limiter.borrowed_tokens == 1  # the thread still runs: its slot stays taken
        assert tool_threads.abandoned.count == before + 1
    finally:
        release.set()
    await wait_until(lambda: limiter.borrowed_tokens == 0)
    assert tool_threads.abandoned.count <= before
    [again] = await dispatch.dispatch(
        [call("quick", "c2")], registry, settings, run_id="r", thread_id="t", limiter=limiter
    )
    assert again.output == "quick"


async def test_threads_never_exceed_the_concurrency_cap_even_when_abandoned() -> None:
    release = threading.Event()
    lock = threading.Lock()
    running = peak = 0
    registry = tools.ToolRegistry()

    @registry.tool
    def stuck() -> str:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        try:
            release.wait(PATIENCE)
        finally:
            with lock:
                running -= 1
        return "late"

    settings = config.ToolsConfig(timeout=0.05, concurrency=2)
    limiter = anyio.CapacityLimiter(2)
    results: list[dispatch.ToolResult] = []
    before = tool_threads.abandoned.count

    async def six_calls() -> None:
        calls = [call("stuck", f"c{i}") for i in range(6)]
        results.extend(
            await dispatch.dispatch(
                calls, registry, settings, run_id="r", thread_id="t", limiter=limiter
            )
        )

    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(six_calls)
            # two calls time out; their threads run on and the other four wait for a slot
            await wait_until(lambda: tool_threads.abandoned.count >= before + 2 and running == 2)
            assert running == 2
            assert limiter.statistics().tasks_waiting == 4
            release.set()
    finally:
        release.set()
    await wait_until(lambda: tool_threads.abandoned.count <= before and running == 0)
    assert len(results) == 6
    assert peak == 2


async def test_abandoned_threads_are_capped() -> None:
    release = threading.Event()
    registry = stuck_registry(release)
    before = tool_threads.abandoned.count
    settings = config.ToolsConfig(timeout=0.05, max_abandoned_threads=before + 1)
    try:
        [first] = await dispatch.dispatch(
            [call("stuck", "c1")], registry, settings, run_id="r", thread_id="t"
        )
        assert first.error is not None
        assert first.error.type == "timeout"
        refused, still_async = await dispatch.dispatch(
            [call("quick", "c2"), call("quick_async", "c3")],
            registry,
            settings,
            run_id="r",
            thread_id="t",
        )
        assert refused.error is not None
        assert refused.error.type == "unavailable"
        assert "tools.max_abandoned_threads" in refused.error.message
        assert still_async.output == "async"  # async tools need no thread
    finally:
        release.set()
    await wait_until(lambda: tool_threads.abandoned.count <= before)
    [after] = await dispatch.dispatch(
        [call("quick", "c4")], registry, settings, run_id="r", thread_id="t"
    )
    assert after.output == "quick"


def test_the_max_abandoned_threads_setting_has_a_sane_default() -> None:
    assert 1 <= config.ToolsConfig().max_abandoned_threads <= 256
    with pytest.raises(Exception, match="max_abandoned_threads"):
        config.ToolsConfig(max_abandoned_threads=0)


def test_an_abandoned_thread_does_not_hold_up_process_exit() -> None:
    script = textwrap.dedent(
        """
        import time, anyio
        from orchestrator import config, models, tools
        from orchestrator.tools import dispatch

        registry = tools.ToolRegistry()

        @registry.tool
        def hangs() -> str:
            time.sleep(3600)
            return "never"

        async def main() -> None:
            call = models.RequiredToolCall(id="c", function=models.FunctionCall("hangs", "{}"))
            settings = config.ToolsConfig(timeout=0.05)
            [result] = await dispatch.dispatch(
                [call], registry, settings, run_id="r", thread_id="t"
            )
            print(result.error.type, flush=True)

        anyio.run(main)
        """
    )
    # bounded only so that a regression fails instead of hanging the suite
    done = subprocess.run(
        [sys.executable, "-c", script], check=False, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "timeout"
