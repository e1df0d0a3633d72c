"""The official ``azure-ai-agents`` SDK, unchanged, against the emulator in Foundry mode."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from azure.ai.agents.aio import AgentsClient
from azure.ai.agents.models import (
    AsyncAgentEventHandler,
    AsyncFunctionTool,
    AsyncRunHandler,
    AsyncToolSet,
    MessageDeltaChunk,
    RequiredMcpToolCall,
    RunStep,
    ThreadRun,
    ToolApproval,
)
from azure.core.pipeline import PipelineRequest
from azure.core.pipeline.policies import AsyncBearerTokenCredentialPolicy
from foundry_support import EmulatorCredential, token_counts

from orchestrator.emulator import Emulator

pytestmark = pytest.mark.anyio


async def get_weather(city: str) -> str:
    """The weather in a city.

    :param city: The city's name.
    :return: The weather as JSON.
    """
    return json.dumps({"city": city, "weather": "sunny"})


@pytest.fixture
async def emu() -> AsyncIterator[Emulator]:
    async with Emulator(queue_delay=0.01, think_delay=0.02, foundry_token_ttl=600) as e:
        yield e


class LoopbackBearer(AsyncBearerTokenCredentialPolicy):
    """The SDK's own bearer policy; the emulator speaks plain HTTP on loopback, and azure-core
    sends bearer tokens over TLS only unless a request says otherwise."""

    async def on_request(self, request: PipelineRequest[Any]) -> None:
        request.context["enforce_https"] = False
        await super().on_request(request)


@pytest.fixture
async def agents(emu: Emulator) -> AsyncIterator[AgentsClient]:
    credential: Any = EmulatorCredential(emu.azure_endpoint)
    auth = LoopbackBearer(credential, "https://ai.azure.com/.default")
    async with AgentsClient(emu.foundry_endpoint, credential, authentication_policy=auth) as client:
        yield client


async def test_create_and_process_calls_a_function_tool(
    emu: Emulator, agents: AgentsClient
) -> None:
    toolset = AsyncToolSet()
    toolset.add(AsyncFunctionTool({get_weather}))
    agents.enable_auto_function_calls(toolset)
    agent = await agents.create_agent(
        model="gpt-4o", name="weather", instructions="Answer.", toolset=toolset
    )
    thread = await agents.threads.create()
    await agents.messages.create(thread_id=thread.id, role="user", content="Weather in Paris?")

    run = await agents.runs.create_and_process(
        thread_id=thread.id, agent_id=agent.id, polling_interval=1
    )

    assert run.status == "completed", run.last_error
    steps = [s async for s in agents.run_steps.list(thread_id=thread.id, run_id=run.id)]
    calls = [c for s in steps if s.type == "tool_calls" for c in s.step_details.tool_calls]
    assert [c.function.name for c in calls] == ["get_weather"]
    assert json.loads(calls[0].function["output"])["weather"] == "sunny"
    messages = [m async for m in agents.messages.list(thread_id=thread.id)]
    assert any("sunny" in m.text_messages[0].text.value for m in messages if m.role == "assistant")
    counts = await token_counts(emu.azure_endpoint)
    assert counts["issued"] == 1  # azure-core caches the token across every request
    assert counts["rejected"] == 0


class Recorder(AsyncAgentEventHandler[str]):
    """Records what the SDK's streaming handler sees."""

    def __init__(self) -> None:
        super().__init__()
        self.text = ""
        self.statuses: list[str] = []
        self.steps: list[str] = []

    async def on_message_delta(self, delta: MessageDeltaChunk) -> None:
        self.text += delta.text

    async def on_thread_run(self, run: ThreadRun) -> None:
        self.statuses.append(getattr(run.status, "value", run.status))

    async def on_run_step(self, step: RunStep) -> None:
        kind, status = (getattr(v, "value", v) for v in (step.type, step.status))
        self.steps.append(f"{kind}:{status}")


async def test_streaming_handler_with_a_function_tool(agents: AgentsClient) -> None:
    toolset = AsyncToolSet()
    toolset.add(AsyncFunctionTool({get_weather}))
    agents.enable_auto_function_calls(toolset)
    agent = await agents.create_agent(model="gpt-4o", name="weather", toolset=toolset)
    thread = await agents.threads.create()
    await agents.messages.create(thread_id=thread.id, role="user", content="Weather in Oslo?")
    recorder = Recorder()

    async with await agents.runs.stream(
        thread_id=thread.id, agent_id=agent.id, event_handler=recorder
    ) as stream:
        await stream.until_done()

    assert recorder.statuses[-1] == "completed", recorder.statuses
    assert "requires_action" in recorder.statuses
    assert "sunny" in recorder.text
    assert "tool_calls:completed" in recorder.steps


MCP_SCRIPT = json.dumps(
    [
        {"server_tools": [{"type": "mcp_list_tools", "server_label": "github"}]},
        {"mcp_calls": [{"server_label": "github", "name": "search", "arguments": {"q": "x"}}]},
        {"server_tools": [{"type": "bing_grounding"}, {"type": "openapi"}]},
        {"message": "Done: {outputs}"},
    ]
)


class Approver(AsyncRunHandler):
    """Approves every MCP call and records what it was asked."""

    def __init__(self) -> None:
        super().__init__()
        self.asked: list[tuple[str, str, str]] = []

    def submit_mcp_tool_approval(  # type: ignore[override]
        self, *, run: ThreadRun, tool_call: RequiredMcpToolCall, **kwargs: Any
    ) -> ToolApproval:
        self.asked.append((tool_call.server_label, tool_call.name, tool_call.arguments))
        return ToolApproval(tool_call_id=tool_call.id, approve=True, headers={"X-Key": "k"})


async def test_create_and_process_answers_mcp_approvals_and_sees_server_steps(
    agents: AgentsClient,
) -> None:
    agent = await agents.create_agent(
        model="gpt-4o", name="mcp", metadata={"emulator_script": MCP_SCRIPT}
    )
    thread = await agents.threads.create()
    await agents.messages.create(thread_id=thread.id, role="user", content="Search.")
    handler = Approver()

    run = await agents.runs.create_and_process(
        thread_id=thread.id, agent_id=agent.id, run_handler=handler, polling_interval=1
    )

    assert run.status == "completed", run.last_error
    assert handler.asked == [("github", "search", '{"q":"x"}')]
    steps = [s async for s in agents.run_steps.list(thread_id=thread.id, run_id=run.id)]
    details = [s.step_details for s in steps]
    activities = [a for d in details if d.type == "activities" for a in d.activities]
    assert [(a.type, a.server_label) for a in activities] == [("mcp_list_tools", "github")]
    calls = [c for d in details if d.type == "tool_calls" for c in d.tool_calls]
    assert sorted(c.type for c in calls) == ["bing_grounding", "mcp", "openapi"]
    [mcp] = [c for c in calls if c.type == "mcp"]
    assert "ran on github" in mcp.output


async def test_missing_api_version_and_bad_token_are_refused(emu: Emulator) -> None:
    import aiohttp

    url = emu.foundry_endpoint + "/threads"
    async with aiohttp.ClientSession() as session:
        async with session.post(url, json={}, headers={"Authorization": "Bearer x"}) as r:
            assert r.status == 400
            assert "api-version" in (await r.json())["error"]["message"]
        async with session.post(
            url, params={"api-version": "v1"}, json={}, headers={"Authorization": "Bearer x"}
        ) as r:
            assert r.status == 401
            assert (await r.json())["error"]["code"] == "401"
