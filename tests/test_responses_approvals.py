"""MCP approvals in Responses chains, decided by the same policy as Foundry's
``submit_tool_approval`` (``approvals.*``, the hook, the ledger) and sent back as
``mcp_approval_response`` items: embedded (policy and hook, a pause for a human), in the worker
(parked, decided with ``store.decide`` as ``orchestrator approve`` does, resumed), and with the
answer to the approval round lost (never sent twice)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import msgspec
import pytest
from worker_tools import lab

from orchestrator import approvals, config, events, tools, worker
from orchestrator import orchestrator as orch_mod
from orchestrator.emulator import Emulator
from orchestrator.protocols.responses import client as client_mod
from orchestrator.protocols.responses import wire
from orchestrator.store import JobState, ResponseJob, SqliteStore

pytestmark = pytest.mark.anyio

SEARCH: Any = {"server_label": "github", "name": "search", "arguments": {"q": "msgspec"}}
DELETE: Any = {"server_label": "github", "name": "delete_repo", "arguments": {"repo": "x"}}
#: An approval round (one call the policy allows, one it does not), then a closing message.
SCRIPT = json.dumps([{"mcp_calls": [SEARCH, DELETE]}, {"message": "Done. {outputs}"}])
MCP_TOOL = wire.Tool(
    type="mcp",
    server_label="github",
    server_url="https://mcp.example.invalid/mcp",
    require_approval="always",
)
ALLOW = {"allow": [{"server_label": "github", "tools": ["search"]}]}


def make_config(**sections: dict[str, Any]) -> config.Config:
    raw: dict[str, Any] = {
        "poll": {"initial_interval": 0.01, "max_interval": 0.05},
        "retry": {"initial_backoff": 0.01, "max_backoff": 0.02, "attempts": 6},
        "run": {"cancel_timeout": 2.0},
    }
    for name, values in sections.items():
        raw[name] = {**raw.get(name, {}), **values}
    return msgspec.convert(raw, config.Config)


@pytest.fixture
async def emu() -> AsyncIterator[Emulator]:
    async with Emulator(queue_delay=0.005, think_delay=0.01) as e:
        yield e


def _orch(emu: Emulator, cfg: config.Config, **kwargs: Any) -> orch_mod.Orchestrator:
    cfg = msgspec.structs.replace(cfg, api=msgspec.structs.replace(cfg.api, base_url=emu.base_url))
    return orch_mod.Orchestrator(cfg, registry=tools.ToolRegistry(), api_key="k", **kwargs)


def _decided(seen: list[events.Event]) -> list[tuple[str, bool, str]]:
    return [
        (e.name, e.approve, e.source) for e in seen if isinstance(e, events.ToolApprovalDecided)
    ]


def _answers(emu: Emulator) -> dict[str, tuple[int, list[bool]]]:
    tally = emu.responses_stats().approvals
    return {t.name: (t.answers, t.decisions) for t in tally.values()}


@pytest.mark.parametrize("mode", ["poll", "stream"])
async def test_the_policy_decides_and_the_chain_goes_on(emu: Emulator, mode: str) -> None:
    seen: list[events.Event] = []
    async with _orch(emu, make_config(poll={"mode": mode}, approvals=ALLOW)) as orch:
        result = await orch.respond(
            model="m",
            input="look it up",
            tools=[MCP_TOOL],
            metadata={"emulator_script": SCRIPT},
            handler=seen.append,
        )
    assert result.ok
    assert result.rounds == 1
    assert "ran on github" in (result.reply or "")
    assert _decided(seen) == [("search", True, "policy"), ("delete_repo", False, "policy")]
    assert _answers(emu) == {"search": (1, [True]), "delete_repo": (1, [False])}


async def test_a_hook_decides_before_the_policy(emu: Emulator) -> None:
    asked: list[approvals.ApprovalRequest] = []

    async def hook(request: approvals.ApprovalRequest) -> bool:
        asked.append(request)
        return True

    async with _orch(emu, make_config(), approve=hook) as orch:
        result = await orch.respond(
            model="m", input="go", tools=[MCP_TOOL], metadata={"emulator_script": SCRIPT}
        )
    assert result.ok
    assert [(r.server_label, r.name, json.loads(r.arguments)) for r in asked] == [
        ("github", "search", {"q": "msgspec"}),
        ("github", "delete_repo", {"repo": "x"}),
    ]
    assert {r.run_id for r in asked} == {result.obj.previous_response_id}
    assert _answers(emu) == {"search": (1, [True]), "delete_repo": (1, [True])}


async def test_wait_mode_hands_the_calls_to_the_caller(emu: Emulator) -> None:
    cfg = make_config(approvals={"mode": "wait", **ALLOW})
    async with _orch(emu, cfg) as orch:
        with pytest.raises(approvals.ApprovalPending) as info:
            await orch.respond(
                model="m", input="go", tools=[MCP_TOOL], metadata={"emulator_script": SCRIPT}
            )
    pending = info.value
    assert [c.name for c in pending.calls] == ["delete_repo"]  # search was allowed
    assert isinstance(pending.run, wire.Response)
    assert [i.name for i in pending.run.approval_requests] == ["search", "delete_repo"]
    assert _answers(emu) == {"search": (0, []), "delete_repo": (0, [])}  # nothing sent


async def test_a_lost_answer_to_the_approval_round_is_not_a_second_round(emu: Emulator) -> None:
    """The continuation carrying the decisions was created but its answer lost: the session
    finds it by its client id; the decisions are neither made nor sent again."""
    seen: list[events.Event] = []

    def handler(event: events.Event) -> None:
        seen.append(event)
        if isinstance(event, events.ToolApprovalDecided) and event.name == "delete_repo":
            emu.inject("drop", method="POST", path_suffix="/responses")

    async with _orch(emu, make_config(approvals=ALLOW)) as orch:
        result = await orch.respond(
            model="m",
            input="go",
            tools=[MCP_TOOL],
            metadata={"emulator_script": SCRIPT},
            handler=handler,
        )
    assert result.ok
    assert emu.stats().faults.get("drop") == 1
    assert len(_decided(seen)) == 2
    assert _answers(emu) == {"search": (1, [True]), "delete_repo": (1, [False])}
    assert emu.responses_stats().duplicate_approvals == 0


async def test_a_parked_response_job_resumes_with_the_humans_decisions(
    emu: Emulator, tmp_path: Path
) -> None:
    """``approvals.mode: wait`` in the worker: the job parks as waiting_approval; a decision
    stored for each call (what ``orchestrator approve`` does) queues it again; the resumed job
    sends the stored decisions, never asking anyone twice."""
    db = tmp_path / "jobs.sqlite3"
    cfg = msgspec.structs.replace(
        lab.settings(db, emu.base_url), approvals=config.ApprovalsConfig(mode="wait")
    )
    t = lab.Lab()
    seen: list[events.Event] = []
    spec = ResponseJob(
        model="m",
        input="go",
        metadata={"emulator_script": SCRIPT},
        tools=(MCP_TOOL,),
    )
    async with (
        lab.client(cfg) as c,
        client_mod.ResponsesClient(cfg.api, cfg.retry, api_key="k") as r,
        SqliteStore(db) as st,
    ):
        job_id = await st.enqueue(spec)
        w = worker.Worker(cfg, st, c, t.registry, responses=r, handler=seen.append)
        with anyio.fail_after(30):
            await w.run(until_idle=True)
        parked = await st.get(job_id)
        assert parked is not None
        assert parked.state is JobState.WAITING_APPROVAL
        asking = (await r.retrieve(parked.run_id or "")).data
        ids = {i.name: i.id or "" for i in asking.approval_requests}
        decisions = {ids["search"]: approvals.APPROVED, ids["delete_repo"]: approvals.DENIED}
        await st.decide(job_id, decisions)
        w = worker.Worker(cfg, st, c, t.registry, responses=r, handler=seen.append)
        with anyio.fail_after(30):
            await w.run(until_idle=True)
        done = await st.get(job_id)
    assert done is not None
    assert done.state is JobState.SUCCEEDED
    assert _decided(seen) == [("search", True, "ledger"), ("delete_repo", False, "ledger")]
    assert _answers(emu) == {"search": (1, [True]), "delete_repo": (1, [False])}
