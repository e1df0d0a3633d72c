"""The orchestrator against the emulator in Foundry mode: project endpoint, Entra-style tokens,
function tools, MCP approvals (policy, hook, ledger) and server-side tool steps, polling and
streaming."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import msgspec
import pytest
from foundry_support import EmulatorCredential, token_counts

from orchestrator import approvals, config, events, tools
from orchestrator import orchestrator as orch_mod
from orchestrator.emulator import Emulator
from orchestrator.http import credentials
from orchestrator.protocols import base
from orchestrator.protocols.assistants import models
from orchestrator.protocols.assistants.client import AssistantsClient

pytestmark = pytest.mark.anyio

MCP_ROUNDS: list[dict[str, Any]] = [
    {"server_tools": [{"type": "mcp_list_tools", "server_label": "github"}]},
    {"tool_calls": [{"name": "add", "arguments": {"a": 2, "b": 3}}]},
    {
        "mcp_calls": [
            {"server_label": "github", "name": "search", "arguments": {"q": "bug"}},
            {"server_label": "github", "name": "delete_repo", "arguments": {"repo": "x"}},
        ]
    },
    {"server_tools": [{"type": "bing_grounding"}, {"type": "some_future_tool"}]},
    {"message": "Done: {outputs}"},
]


def make_config(**sections: dict[str, Any]) -> config.Config:
    raw: dict[str, Any] = {
        "api": {"flavor": "foundry", "base_url": "http://unused", "credential": "entra"},
        "poll": {"initial_interval": 0.01, "max_interval": 0.05},
        "retry": {"initial_backoff": 0.01, "max_backoff": 0.02},
        "approvals": {"allow": [{"server_label": "github", "tools": ["search"]}]},
    }
    for name, values in sections.items():
        raw[name] = {**raw.get(name, {}), **values}
    return msgspec.convert(raw, config.Config)


@pytest.fixture
def registry() -> tools.ToolRegistry:
    reg = tools.ToolRegistry()

    @reg.tool
    def add(a: int, b: int) -> int:
        """Add two integers.

        Args:
            a: The first.
            b: The second.
        """
        return a + b

    return reg


@pytest.fixture
async def emu() -> AsyncIterator[Emulator]:
    async with Emulator(queue_delay=0.01, think_delay=0.02, foundry_token_ttl=600) as e:
        yield e


class MemoryLedger:
    """The run loop's ledger protocol over a dict (the worker's store does the same durably)."""

    def __init__(self) -> None:
        self.saved: dict[tuple[str, str], str] = {}

    async def outputs(self, run_id: str) -> dict[str, str]:
        return {c: o for (r, c), o in self.saved.items() if r == run_id}

    async def save(self, run_id: str, tool_call_id: str, output: str) -> None:
        self.saved.setdefault((run_id, tool_call_id), output)


async def decide(
    approver: approvals.Approver,
    run: models.Run,
    ledger: MemoryLedger,
    emit: Callable[[events.Event], Awaitable[None]],
) -> list[base.ApprovalAnswer]:
    """What the loop does with a run's approval round (as the session presents its calls)."""
    calls = [
        base.ApprovalCall(
            id=c.id, server_label=str(c.server_label), name=str(c.name), arguments=str(c.arguments)
        )
        for c in run.approval_calls
    ]

    async def save(call_id: str, output: str) -> None:
        await ledger.save(run.id, call_id, output)

    return await approver.decide(
        calls,
        obj=run,
        object_id=run.id,
        scope=run.thread_id,
        stored=await ledger.outputs(run.id),
        save=save,
        emit=emit,
    )


async def drive(
    emu: Emulator,
    registry: tools.ToolRegistry,
    cfg: config.Config,
    *,
    rounds: list[dict[str, Any]],
    approve: approvals.Hook | None = None,
) -> tuple[Any, list[events.Event], EmulatorCredential]:
    cfg = msgspec.structs.replace(
        cfg, api=msgspec.structs.replace(cfg.api, base_url=emu.foundry_endpoint)
    )
    source = EmulatorCredential(emu.azure_endpoint)
    seen: list[events.Event] = []
    async with (
        AssistantsClient(cfg.api, cfg.retry, credential=credentials.EntraToken(source)) as client,
        orch_mod.Orchestrator(
            cfg, registry=registry, client=client, handler=seen.append, approve=approve
        ) as orch,
    ):
        agent = await client.create_assistant(
            model="gpt-4o",
            tools=registry.definitions(),
            metadata={"emulator_script": json.dumps(rounds)},
        )
        thread = await client.create_thread()
        result = await orch.run(
            thread_id=thread.id,
            assistant_id=agent.id,
            messages=[models.MessageRequest(role="user", content="go")],
        )
    return result, seen, source


def of(seen: list[events.Event], kind: type[events.Event]) -> list[Any]:
    return [e for e in seen if isinstance(e, kind)]


@pytest.mark.parametrize("mode", ["poll", "stream"])
async def test_function_tools_and_approvals_by_policy(
    emu: Emulator, registry: tools.ToolRegistry, mode: str
) -> None:
    cfg = make_config(poll={"mode": mode, "fetch_steps": True})

    result, seen, source = await drive(emu, registry, cfg, rounds=MCP_ROUNDS)

    assert result.outcome == "completed"
    assert result.rounds == 2  # one function round, one approval round
    assert [o.output for o in result.outputs] == ["5"]
    decided = [(d.name, d.approve, d.source) for d in of(seen, events.ToolApprovalDecided)]
    assert decided == [("search", True, "policy"), ("delete_repo", False, "policy")]
    assert "ran on github" in (result.reply or "")
    assert "denied by the user" in (result.reply or "")
    observed = {(o.step_type, o.tool_type) for o in of(seen, events.ServerToolObserved)}
    assert observed == {
        ("activities", "mcp_list_tools"),
        ("tool_calls", "mcp"),
        ("tool_calls", "bing_grounding"),
        ("tool_calls", "some_future_tool"),
    }
    assert not of(seen, events.UnknownStatus)
    assert source.fetches == 1
    assert source.scopes == [(credentials.FOUNDRY_SCOPE,)]
    assert (await token_counts(emu.azure_endpoint))["rejected"] == 0


async def test_hook_decides_and_ledger_keeps_decisions(
    emu: Emulator, registry: tools.ToolRegistry
) -> None:
    asked: list[approvals.ApprovalRequest] = []

    async def approve(call: approvals.ApprovalRequest) -> bool | approvals.Approval:
        asked.append(call)
        if call.name == "search":
            return approvals.Approval(approve=True, headers={"X-Secret": "s3cr3t"})
        return False

    result, seen, _ = await drive(emu, registry, make_config(), rounds=MCP_ROUNDS, approve=approve)

    assert result.outcome == "completed"
    assert [(c.server_label, c.name, json.loads(c.arguments)) for c in asked] == [
        ("github", "search", {"q": "bug"}),
        ("github", "delete_repo", {"repo": "x"}),
    ]
    decided = [(d.name, d.approve, d.source) for d in of(seen, events.ToolApprovalDecided)]
    assert decided == [("search", True, "hook"), ("delete_repo", False, "hook")]
    assert "s3cr3t" not in repr(approvals.Approval(approve=True, headers={"X-Secret": "s3cr3t"}))
    assert all("s3cr3t" not in msgspec.json.encode(e).decode() for e in seen)


async def test_decisions_in_the_ledger_are_never_made_again() -> None:
    run = models.decode(
        json.dumps(
            {
                "id": "run_1",
                "thread_id": "thread_1",
                "status": "requires_action",
                "required_action": {
                    "type": "submit_tool_approval",
                    "submit_tool_approval": {
                        "tool_calls": [
                            {
                                "id": "c1",
                                "type": "mcp",
                                "name": "a",
                                "arguments": "{}",
                                "server_label": "s",
                            },
                            {
                                "id": "c2",
                                "type": "mcp",
                                "name": "b",
                                "arguments": "{}",
                                "server_label": "s",
                            },
                        ]
                    },
                },
            }
        ),
        models.Run,
    )
    ledger = MemoryLedger()
    await ledger.save("run_1", "c1", approvals.APPROVED)
    asked: list[str] = []

    async def hook(call: approvals.ApprovalRequest) -> bool:
        asked.append(call.tool_call_id)
        return False

    seen: list[events.Event] = []

    async def emit(event: events.Event) -> None:
        seen.append(event)

    approver = approvals.Approver(config.ApprovalsConfig(), hook)
    answers = await decide(approver, run, ledger, emit)

    assert asked == ["c2"]  # c1 was decided before (a crash, or a human): not asked again
    assert [(a.tool_call_id, a.approve) for a in answers] == [("c1", True), ("c2", False)]
    assert ledger.saved[("run_1", "c2")] == approvals.DENIED
    assert [d.source for d in of(seen, events.ToolApprovalDecided)] == ["ledger", "hook"]


async def test_wait_mode_leaves_undecided_calls_pending() -> None:
    run = models.decode(
        b'{"id": "run_1", "thread_id": "t", "status": "requires_action", "required_action": '
        b'{"type": "submit_tool_approval", "submit_tool_approval": {"tool_calls": '
        b'[{"id": "c1", "type": "mcp", "name": "x", "arguments": "{}", "server_label": "s"}]}}}',
        models.Run,
    )
    approver = approvals.Approver(config.ApprovalsConfig(mode="wait"))

    async def emit(event: events.Event) -> None:
        pass

    with pytest.raises(approvals.ApprovalPending) as info:
        await decide(approver, run, MemoryLedger(), emit)
    assert [c.tool_call_id for c in info.value.calls] == ["c1"]


@pytest.mark.parametrize("mode", ["poll", "stream"])
@pytest.mark.parametrize("kind", ["drop", "500"])
async def test_a_lost_answer_to_the_approval_submit_is_not_a_second_decision(
    emu: Emulator, registry: tools.ToolRegistry, mode: str, kind: str
) -> None:
    """The decisions reached the server but the answer was lost: the retry reads the run, sees
    the round taken, and neither decides nor submits again."""
    rounds = [MCP_ROUNDS[2], {"message": "Done: {outputs}"}]
    emu.inject(kind, path_suffix="/submit_tool_outputs")  # type: ignore[arg-type]
    cfg = make_config(poll={"mode": mode})

    result, seen, _ = await drive(emu, registry, cfg, rounds=rounds)

    assert result.outcome == "completed"
    assert "ran on github" in (result.reply or "")
    decided = [(d.name, d.approve) for d in of(seen, events.ToolApprovalDecided)]
    assert decided == [("search", True), ("delete_repo", False)]
    stats = emu.stats()
    submits = stats.count(contains="submit_tool_outputs")
    refused = stats.count(contains="submit_tool_outputs", status=400)
    assert stats.faults.get(kind) == 1  # the answer of the approval submit was lost
    assert submits >= 1
    assert refused == 0  # never sent again once it had landed


async def test_embedded_wait_mode_pauses_without_cancelling(
    emu: Emulator, registry: tools.ToolRegistry
) -> None:
    """Embedded, ``approvals.mode: wait`` hands the undecided calls to the caller and leaves
    the run waiting; the caller submits its decisions and adopts the run to its end."""
    rounds = [MCP_ROUNDS[2], {"message": "Done: {outputs}"}]
    cfg = make_config(approvals={"mode": "wait", "allow": []})
    with pytest.raises(approvals.ApprovalPending) as info:
        await drive(emu, registry, cfg, rounds=rounds)
    pending = info.value
    assert [c.name for c in pending.calls] == ["search", "delete_repo"]
    api = msgspec.structs.replace(cfg.api, base_url=emu.foundry_endpoint)
    provider = credentials.EntraToken(EmulatorCredential(emu.azure_endpoint))
    async with (
        AssistantsClient(api, cfg.retry, credential=provider) as client,
        orch_mod.Orchestrator(cfg, registry=registry, client=client) as orch,
    ):
        run = await client.retrieve_run(pending.run.thread_id, pending.run.id)
        assert run.status == "requires_action"  # not cancelled
        decisions = [
            models.ToolApproval(tool_call_id=c.tool_call_id, approve=c.name == "search")
            for c in pending.calls
        ]
        await client.submit_tool_approvals(run.thread_id, run.id, decisions)
        result = await orch.adopt(run.thread_id, run.id)
    assert result.outcome == "completed"
    assert "denied by the user" in (result.reply or "")
