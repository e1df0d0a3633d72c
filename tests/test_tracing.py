"""Spans from a real run: one per run, one per tool call, children of their run."""

from __future__ import annotations

from collections.abc import AsyncIterator

import msgspec
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from orchestrator import config, tools, tracing
from orchestrator import orchestrator as orch_mod
from orchestrator.client import AssistantsClient
from orchestrator.emulator import Emulator

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
    recorder = tracing.SpanRecorder(tracer_provider=provider)
    cfg = msgspec.convert({"poll": {"initial_interval": 0.01, "max_interval": 0.02}}, config.Config)

    assistant = await client.create_assistant(model="m", tools=registry.definitions())
    thread = await client.create_thread()
    async with orch_mod.Orchestrator(
        cfg, registry=registry, client=client, handler=recorder.observe
    ) as orch:
        result = await orch.run(thread_id=thread.id, assistant_id=assistant.id)

    spans = {s.name: s for s in exporter.get_finished_spans()}
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
