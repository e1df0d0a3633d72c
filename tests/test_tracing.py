"""Spans from a real run: one per run, one per tool call, children of their run."""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator

import anyio
import msgspec
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from orchestrator import config, errors, tools, tracing
from orchestrator import orchestrator as orch_mod
from orchestrator.emulator import Emulator
from orchestrator.protocols.assistants.client import AssistantsClient

pytestmark = pytest.mark.anyio


@pytest.fixture
async def client() -> AsyncIterator[AssistantsClient]:
    async with Emulator(queue_delay=0.01, think_delay=0.01) as emu:
        api = config.ApiConfig(base_url=emu.base_url)
        async with AssistantsClient(api, api_key="k") as c:
            yield c


async def test_run_and_tool_spans(client: AssistantsClient) -> None:
    registry = tools.ToolRegistry()

    @registry.tool
    def double(x: int) -> int:
        """Twice x."""
        return 2 * x

    @registry.tool
    def fail(x: int) -> int:
        """Always fails."""
        raise RuntimeError("no")

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    cfg = msgspec.convert({"poll": {"initial_interval": 0.01, "max_interval": 0.02}}, config.Config)

    assistant = await client.create_assistant(model="m", tools=registry.definitions())
    thread = await client.create_thread()
    # The Orchestrator registers its own recorder: no second one (that would double spans).
    async with orch_mod.Orchestrator(
        cfg, registry=registry, client=client, tracer_provider=provider
    ) as orch:
        result = await orch.run(thread_id=thread.id, assistant_id=assistant.id)

    finished = exporter.get_finished_spans()
    assert [s.name for s in finished].count("assistants.run") == 1
    assert [s.name for s in finished].count("tool double") == 1
    spans = {s.name: s for s in finished}
    run_span = spans["assistants.run"]
    assert run_span.attributes is not None
    assert run_span.attributes["assistants.run_id"] == result.run.id
    assert run_span.attributes["assistants.outcome"] == "completed"
    statuses = [
        e.attributes["current"] for e in run_span.events if e.attributes and e.name == "status"
    ]
    assert statuses[0] == "queued"
    assert statuses[-1] == "completed"
    assert "requires_action" in statuses
    for name, failed in (("tool double", False), ("tool fail", True)):
        span = spans[name]
        assert span.parent is not None
        assert span.parent.span_id == run_span.context.span_id
        assert (span.status.status_code.name == "ERROR") is failed
        assert span.start_time is not None
        assert span.end_time is not None
        assert span.start_time <= span.end_time


# --- runs that end by an exception or a cancellation (issue 10, defect 10) ---------------------


def recorder_and_exporter() -> tuple[tracing.SpanRecorder, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return tracing.SpanRecorder(tracer_provider=provider), exporter


FAST = msgspec.convert(
    {"poll": {"initial_interval": 0.01, "max_interval": 0.02}, "retry": {"attempts": 1}},
    config.Config,
)


async def test_the_span_of_a_run_ending_by_an_exception_is_ended() -> None:
    registry = tools.ToolRegistry()
    recorder, exporter = recorder_and_exporter()
    async with Emulator(queue_delay=0.01, think_delay=0.01) as emu:

        @registry.tool
        async def breaks_the_server() -> str:
            """Makes every later request fail."""
            emu.configure(fault_no_retry=1.0)
            return "ok"

        api = config.ApiConfig(base_url=emu.base_url)
        async with AssistantsClient(api, api_key="k") as c:
            assistant = await c.create_assistant(model="m", tools=registry.definitions())
            thread = await c.create_thread()
            async with orch_mod.Orchestrator(
                FAST, registry=registry, client=c, handler=recorder.observe
            ) as orch:
                with pytest.raises(errors.APIError):
                    await orch.run(thread_id=thread.id, assistant_id=assistant.id)
    [run_span] = [s for s in exporter.get_finished_spans() if s.name == "assistants.run"]
    assert run_span.status.status_code.name == "ERROR"
    assert run_span.attributes is not None
    assert run_span.attributes["assistants.outcome"] == "error"
    assert [e.name for e in run_span.events if e.name == "exception"] == ["exception"]
    assert recorder._runs == {}  # nothing left open


async def test_the_span_of_a_cancelled_run_is_ended(client: AssistantsClient) -> None:
    registry = tools.ToolRegistry()
    recorder, exporter = recorder_and_exporter()
    started = anyio.Event()

    @registry.tool
    async def forever() -> str:
        """Never returns."""
        started.set()
        await anyio.sleep_forever()
        return "never"

    assistant = await client.create_assistant(model="m", tools=registry.definitions())
    thread = await client.create_thread()
    async with (
        orch_mod.Orchestrator(
            FAST, registry=registry, client=client, handler=recorder.observe
        ) as orch,
        anyio.create_task_group() as tg,
    ):
        tg.start_soon(functools.partial(orch.run, thread_id=thread.id, assistant_id=assistant.id))
        with anyio.fail_after(5):
            await started.wait()
        tg.cancel_scope.cancel()
    [run_span] = [s for s in exporter.get_finished_spans() if s.name == "assistants.run"]
    assert run_span.status.status_code.name == "ERROR"
    assert run_span.attributes is not None
    assert run_span.attributes["assistants.outcome"] == "cancelled"
    assert recorder._runs == {}


async def test_a_span_ended_normally_is_not_ended_again(client: AssistantsClient) -> None:
    recorder, exporter = recorder_and_exporter()
    assistant = await client.create_assistant(model="m")
    thread = await client.create_thread()
    async with orch_mod.Orchestrator(FAST, client=client, handler=recorder.observe) as orch:

        async def run_then_fail() -> None:
            with tracing.ending_spans():
                await orch.run(thread_id=thread.id, assistant_id=assistant.id)
                raise RuntimeError("after the run")

        with pytest.raises(RuntimeError):
            await run_then_fail()
    [run_span] = [s for s in exporter.get_finished_spans() if s.name == "assistants.run"]
    assert run_span.attributes is not None
    assert run_span.attributes["assistants.outcome"] == "completed"


async def test_response_chain_spans() -> None:
    registry = tools.ToolRegistry()

    @registry.tool
    def double(x: int) -> int:
        """Twice x."""
        return 2 * x

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    recorder = tracing.SpanRecorder(tracer_provider=provider)
    async with Emulator(queue_delay=0.01, think_delay=0.01) as emu:
        raw = {"api": {"base_url": emu.base_url}, "poll": {"initial_interval": 0.01}}
        cfg = msgspec.convert(raw, config.Config)
        async with orch_mod.Orchestrator(
            cfg, registry=registry, api_key="k", handler=recorder.observe
        ) as orch:
            result = await orch.respond(model="m", input="x")

    finished = exporter.get_finished_spans()
    responses = [s for s in finished if s.name == "responses.response"]
    assert len(responses) == 2  # the function call, then the answer
    for span in responses:
        assert span.attributes is not None
        assert span.attributes["responses.outcome"] == "completed"
    [tool] = [s for s in finished if s.name == "tool double"]
    assert tool.parent is not None
    assert tool.parent.span_id == responses[0].context.span_id
    assert result.ok
