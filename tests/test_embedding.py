"""Embedding the Orchestrator as a new user would: shortcuts, tool checks, events, logs, metrics."""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import msgspec
import pytest
from prometheus_client import CollectorRegistry

from orchestrator import AssistantsClient, Config, Orchestrator, errors, events, metrics
from orchestrator import tools as tools_mod
from orchestrator.emulator import Emulator

pytestmark = pytest.mark.anyio

FAST = {
    "poll": {"initial_interval": 0.01, "max_interval": 0.05},
    "run": {"cancel_timeout": 2.0},
}


def fast(**sections: dict[str, object]) -> Config:
    return msgspec.convert({**FAST, **sections}, Config)


@pytest.fixture
async def emu() -> AsyncIterator[Emulator]:
    async with Emulator(queue_delay=0.01, think_delay=0.01, cancel_delay=0.01) as e:
        yield e


def registry_with_double() -> tools_mod.ToolRegistry:
    registry = tools_mod.ToolRegistry()

    @registry.tool
    def double(x: int) -> int:
        """Twice x."""
        return 2 * x

    return registry


def script(*rounds: dict[str, object]) -> dict[str, str]:
    return {"emulator_script": json.dumps(list(rounds))}


# --- entry points ------------------------------------------------------------------------------


async def test_base_url_and_api_key_shortcuts(emu: Emulator) -> None:
    registry = registry_with_double()
    async with AssistantsClient(base_url=emu.base_url, api_key="sk-test") as client:
        assert client.base_url == emu.base_url
        assistant = await client.create_assistant(model="m", tools=registry.definitions())
        thread = await client.create_thread()
    async with Orchestrator(
        fast(), base_url=emu.base_url, api_key="sk-test", registry=registry
    ) as orch:
        assert orch.config.api.base_url == emu.base_url
        result = await orch.run(thread_id=thread.id, assistant_id=assistant.id)
    assert result.ok
    assert len(result.outputs) == 1
    assert result.outputs[0].output.lstrip("-").isdigit()


async def test_no_api_key_fails_at_start_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("MY_KEY_VAR", raising=False)
    cfg = fast(api={"base_url": "http://127.0.0.1:9/v1", "api_key_env": "MY_KEY_VAR"})
    with pytest.raises(errors.ConfigError, match="set MY_KEY_VAR"):
        async with Orchestrator(cfg):
            pass


def test_api_key_with_a_newline_is_refused_without_showing_it() -> None:
    with pytest.raises(errors.ConfigError, match="CR/LF") as info:
        Orchestrator(api_key="sk-abc\r\nX: 1")
    assert "sk-abc" not in str(info.value)
    with pytest.raises(errors.ConfigError, match="CR/LF"):
        AssistantsClient(api_key="sk-abc\n")


def test_events_carry_their_tag_as_type() -> None:
    event = events.StreamFallback(run_id="r", thread_id="t", reason="cut")
    assert event.type == "stream.fallback"
    assert json.loads(events.encode_event(event))["type"] == event.type
    assert events.RunFinished.__struct_config__.tag == "run.finished"


# --- tools.modules and the tool check ----------------------------------------------------------


def test_the_orchestrator_imports_tools_modules(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", os.getcwd())])
    registry = tools_mod.ToolRegistry()
    monkeypatch.setattr(tools_mod, "default_registry", registry)
    (tmp_path / "embedded_tools_x.py").write_text(
        "from orchestrator import tools\n\n\n@tools.default_registry.tool\n"
        "def embedded_tool() -> str:\n    return 'ok'\n"
    )
    monkeypatch.delitem(sys.modules, "embedded_tools_x", raising=False)
    orch = Orchestrator(fast(tools={"modules": ["embedded_tools_x"]}), api_key="k")
    assert "embedded_tool" in orch.registry
    sys.modules.pop("embedded_tools_x", None)


async def test_tools_missing_from_the_registry_are_named_before_the_run(
    emu: Emulator, caplog: pytest.LogCaptureFixture
) -> None:
    registry = registry_with_double()
    offered = registry_with_double()

    @offered.tool
    def lookup(q: str) -> str:
        """Not registered where the run is driven."""
        return q

    async with AssistantsClient(base_url=emu.base_url, api_key="k") as client:
        assistant = await client.create_assistant(model="m", tools=offered.definitions())
        thread = await client.create_thread()
        caplog.set_level(logging.WARNING)
        async with Orchestrator(fast(), registry=registry, client=client) as orch:
            result = await orch.run(thread_id=thread.id, assistant_id=assistant.id)
        warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
        check = [r for r in warnings if r.name == "orchestrator.tools.check"]
        assert len(check) == 1
        assert "lookup" in check[0].getMessage()
        assert assistant.id in check[0].getMessage()
        # At run time the unknown tool is a WARNING too, not INFO.
        assert any(
            r.name == "orchestrator.tools.dispatch" and "unknown_tool" in r.getMessage()
            for r in warnings
        )
        assert result.outcome == "completed"

        strict = fast(tools={"check_tools": "error"})
        async with Orchestrator(strict, registry=registry, client=client) as orch:
            with pytest.raises(errors.ConfigError, match=r"lookup.*tools\.check_tools: error"):
                await orch.run(thread_id=thread.id, assistant_id=assistant.id)
            # The run's own tools replace the assistant's: this run offers only `double`.
            ok = await orch.run(
                thread_id=thread.id, assistant_id=assistant.id, tools=registry.definitions()
            )
            assert ok.ok


# --- stream, cancellation and logs -------------------------------------------------------------


async def test_leaving_the_stream_waits_for_the_cancel(emu: Emulator) -> None:
    async with AssistantsClient(base_url=emu.base_url, api_key="k") as client:
        assistant = await client.create_assistant(model="m", metadata=script({"stall": True}))
        thread = await client.create_thread()
        async with Orchestrator(fast(), registry=tools_mod.ToolRegistry(), client=client) as orch:
            run_id = None
            async with orch.stream(thread_id=thread.id, assistant_id=assistant.id) as stream:
                async for event in stream:
                    if isinstance(event, events.RunCreated):
                        run_id = event.run.id
                        break
            assert run_id is not None
            # Nothing awaited after __aexit__: the cancel has already landed.
            run = await client.retrieve_run(thread.id, run_id)
            assert run.status in ("cancelling", "cancelled")


async def test_caller_going_away_is_info_and_tool_exceptions_are_one_line(
    emu: Emulator, caplog: pytest.LogCaptureFixture
) -> None:
    registry = tools_mod.ToolRegistry()

    @registry.tool
    def broken(x: int) -> int:
        """Fails as tools do."""
        raise ValueError("no such customer")

    caplog.set_level(logging.INFO)
    async with AssistantsClient(base_url=emu.base_url, api_key="k") as client:
        assistant = await client.create_assistant(model="m", tools=registry.definitions())
        thread = await client.create_thread()
        async with Orchestrator(fast(), registry=registry, client=client) as orch:
            await orch.run(thread_id=thread.id, assistant_id=assistant.id)
            stalled = await client.create_assistant(model="m", metadata=script({"stall": True}))
            with anyio.move_on_after(0.3):  # the service's client disconnects
                await orch.run(thread_id=thread.id, assistant_id=stalled.id)
    failed = [r for r in caplog.records if "no such customer" in r.getMessage()]
    assert len(failed) == 1
    assert failed[0].levelno == logging.WARNING
    assert failed[0].exc_info is None  # one line, no traceback at the default level
    stopped = [r for r in caplog.records if "caller cancelled" in r.getMessage()]
    assert len(stopped) == 1
    assert stopped[0].levelno == logging.INFO


# --- metrics -----------------------------------------------------------------------------------


async def test_metrics_run_duration_and_tokens(emu: Emulator) -> None:
    m = metrics.Metrics(CollectorRegistry())
    registry = registry_with_double()
    async with AssistantsClient(base_url=emu.base_url, api_key="k") as client:
        assistant = await client.create_assistant(model="m", tools=registry.definitions())
        thread = await client.create_thread()
    async with Orchestrator(
        fast(), base_url=emu.base_url, api_key="k", registry=registry, metrics=m
    ) as orch:
        result = await orch.run(thread_id=thread.id, assistant_id=assistant.id)
    assert result.ok
    reg = m.registry
    assert (
        reg.get_sample_value("orchestrator_run_duration_seconds_count", {"outcome": "completed"})
        == 1
    )
    usage = result.run.usage
    assert usage is not None
    assert usage.prompt_tokens > 0
    assert reg.get_sample_value("orchestrator_tokens_total", {"kind": "prompt"}) == (
        usage.prompt_tokens
    )
    assert reg.get_sample_value("orchestrator_tokens_total", {"kind": "completion"}) == (
        usage.completion_tokens
    )
    # The client's requests are counted too: the Orchestrator wires both sides.
    assert (
        reg.get_sample_value(
            "orchestrator_http_requests_total", {"endpoint": "create_run", "status": "200"}
        )
        == 1
    )
    body, content_type = m.exposition()
    assert b"orchestrator_run_duration_seconds_bucket" in body
    assert content_type.startswith("text/plain")
