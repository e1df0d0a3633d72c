"""Human-in-the-loop approvals in the worker: a Foundry MCP call the policy does not allow parks
the job as ``waiting_approval``; ``orchestrator approve`` stores the decision in the ledger and
queues the job; the resumed job submits that decision (never asking again) and finishes."""

from __future__ import annotations

import argparse
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import msgspec
import pytest
from foundry_support import EmulatorCredential

from orchestrator import approvals, cli, config, errors, events, tools, worker
from orchestrator.emulator import Emulator
from orchestrator.http import credentials
from orchestrator.protocols.assistants.client import AssistantsClient
from orchestrator.store import CreateJob, JobState, JobStore, MemoryStore, RunOverrides, SqliteStore

pytestmark = pytest.mark.anyio

ROUNDS = [
    {
        "mcp_calls": [
            {"server_label": "github", "name": "search", "arguments": {"q": "a"}},
            {"server_label": "github", "name": "merge_pr", "arguments": {"pr": 7}},
        ]
    },
    {"message": "Done: {outputs}"},
]


@pytest.fixture
async def emu() -> AsyncIterator[Emulator]:
    async with Emulator(queue_delay=0.01, think_delay=0.02, foundry_token_ttl=600) as e:
        yield e


@pytest.fixture(params=["memory", "sqlite"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[JobStore]:
    st: JobStore = MemoryStore() if request.param == "memory" else SqliteStore(tmp_path / "j.db")
    async with st:
        yield st


def settings(emu: Emulator, db: Path) -> config.Config:
    return msgspec.convert(
        {
            "api": {"flavor": "foundry", "base_url": emu.foundry_endpoint},
            "poll": {"initial_interval": 0.01, "max_interval": 0.05},
            "worker": {"sqlite_path": str(db), "health": None, "idle_poll_seconds": 0.05},
            "approvals": {
                "mode": "wait",
                "allow": [{"server_label": "github", "tools": ["search"]}],
            },
        },
        config.Config,
    )


async def run_until_idle(w: worker.Worker) -> None:
    with anyio.fail_after(30):
        await w.run(until_idle=True)


async def test_a_parked_job_resumes_after_a_human_decision(
    emu: Emulator, store: JobStore, tmp_path: Path
) -> None:
    cfg = settings(emu, tmp_path / "j.db")
    provider = credentials.EntraToken(EmulatorCredential(emu.azure_endpoint))
    seen: list[events.Event] = []
    async with AssistantsClient(cfg.api, cfg.retry, credential=provider) as client:
        agent = await client.create_assistant(model="gpt-4o")
        spec = CreateJob(
            assistant_id=agent.id,
            overrides=RunOverrides(metadata={"emulator_script": json.dumps(ROUNDS)}),
        )
        job_id = await store.enqueue(spec)
        registry = tools.ToolRegistry()
        await run_until_idle(worker.Worker(cfg, store, client, registry, handler=seen.append))

        parked = await store.get(job_id)
        assert parked is not None
        assert parked.state is JobState.WAITING_APPROVAL
        assert parked.run_id is not None
        history = [h.message for h in await store.history(job_id)]
        assert any("waiting for approval" in m and "merge_pr" in m for m in history)
        # The allowed call was decided by the policy and kept; the other one is open.
        kept = await store.outputs(parked.run_id)
        run = await client.retrieve_run(parked.thread_id or "", parked.run_id)
        search, merge = (c.id for c in run.approval_calls)
        assert kept == {search: approvals.APPROVED}

        # Only a parked job can be decided.
        with pytest.raises(errors.InvalidJob, match="no job"):
            await store.decide("job_nope", {merge: approvals.APPROVED})

        await store.decide(job_id, {merge: approvals.DENIED})
        assert (await store.get(job_id)).state is JobState.QUEUED  # type: ignore[union-attr]
        await run_until_idle(worker.Worker(cfg, store, client, registry, handler=seen.append))

    done = await store.get(job_id)
    assert done is not None
    assert done.state is JobState.SUCCEEDED
    assert done.result is not None
    assert "denied by the user" in (done.result.reply or "")
    decided = [
        (e.name, e.approve, e.source) for e in seen if isinstance(e, events.ToolApprovalDecided)
    ]
    # First claim: search by policy; second claim: both read back from the ledger.
    assert decided == [
        ("search", True, "policy"),
        ("search", True, "ledger"),
        ("merge_pr", False, "ledger"),
    ]
    with pytest.raises(errors.InvalidJob, match="is succeeded, not waiting"):
        await store.decide(job_id, {merge: approvals.APPROVED})  # finished: nothing to decide


async def test_cli_approve_stores_the_decision(
    emu: Emulator, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "j.db"
    cfg = settings(emu, db)
    provider = credentials.EntraToken(EmulatorCredential(emu.azure_endpoint))
    async with (
        AssistantsClient(cfg.api, cfg.retry, credential=provider) as client,
        SqliteStore(db) as st,
    ):
        agent = await client.create_assistant(model="gpt-4o")
        meta: Any = {"emulator_script": json.dumps(ROUNDS)}
        job_id = await st.enqueue(
            CreateJob(assistant_id=agent.id, overrides=RunOverrides(metadata=meta))
        )
        await run_until_idle(worker.Worker(cfg, st, client, tools.ToolRegistry()))
        job = await st.get(job_id)
        assert job is not None
        assert job.run_id is not None
        run = await client.retrieve_run(job.thread_id or "", job.run_id)
        merge = run.approval_calls[1].id

    args = argparse.Namespace(job=job_id, calls=[merge], allow=True, deny=False)
    assert await cli.cmd_approve(cfg, args) == 0
    assert "allowed; the job is queued again" in capsys.readouterr().out
    async with SqliteStore(db) as st:
        job = await st.get(job_id)
        assert job is not None
        assert job.state is JobState.QUEUED
        assert (await st.outputs(job.run_id or ""))[merge] == approvals.APPROVED


def test_approve_command_line() -> None:
    parser = cli._parser()
    args = parser.parse_args(["approve", "job_1", "call_a", "call_b", "--deny"])
    assert (args.job, args.calls, args.allow, args.deny) == (
        "job_1",
        ["call_a", "call_b"],
        False,
        True,
    )
    with pytest.raises(SystemExit):
        parser.parse_args(["approve", "job_1", "call_a"])  # --allow or --deny is required
    with pytest.raises(SystemExit):
        parser.parse_args(["approve", "job_1", "call_a", "--allow", "--deny"])
