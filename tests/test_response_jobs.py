"""``ResponseJob``s in the worker, in-process against the emulator and a SQLite file: jobs of
both protocols in one queue, a resumed job that continues from its recorded response without
re-running or re-sending a round, the spec's validation, and the CLI's ``--protocol``."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import anyio
import msgspec
import pytest
from prometheus_client import parser
from worker_tools import lab

from orchestrator import cli, config, errors, worker
from orchestrator.emulator import Emulator
from orchestrator.protocols.responses import client as client_mod
from orchestrator.protocols.responses import wire
from orchestrator.store import JobState, ResponseJob, SqliteStore
from orchestrator.store import base as store_base

pytestmark = pytest.mark.anyio


@pytest.fixture
async def emu() -> AsyncIterator[Emulator]:
    async with Emulator(think_delay=0.02, queue_delay=0.01) as e:
        yield e


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "jobs.sqlite3"


def responses(cfg: config.Config) -> client_mod.ResponsesClient:
    return client_mod.ResponsesClient(cfg.api, cfg.retry, api_key="sk-test")


def response_job(script: str) -> ResponseJob:
    return ResponseJob(model="gpt-4o-mini", input="go", metadata={"emulator_script": script})


async def run_until_idle(w: worker.Worker) -> None:
    with anyio.fail_after(30):
        await w.run(until_idle=True)


async def test_jobs_of_both_protocols_share_one_queue(emu: Emulator, db: Path) -> None:
    cfg, t = lab.settings(db, emu.base_url), lab.Lab()
    async with lab.client(cfg) as c, responses(cfg) as r, SqliteStore(db) as st:
        assistant = str((await c.create_assistant(model="gpt-4o-mini")).id)
        run_job = await st.enqueue(lab.job(assistant, lab.script([False])))
        chain_jobs = [
            await st.enqueue(response_job(lab.script([False, False], [False]))) for _ in range(3)
        ]
        w = worker.Worker(cfg, st, c, t.registry, worker_id="w1", responses=r)
        await run_until_idle(w)
        jobs = {j: await st.get(j) for j in [run_job, *chain_jobs]}
        body, _ = w.metrics.exposition()
        histories = {j: lab.messages(await st.history(j)) for j in chain_jobs}
    for job in jobs.values():
        assert job is not None
        assert job.state is JobState.SUCCEEDED, job.result
        assert job.result is not None
        assert job.result.reply is not None
        assert job.result.reply.startswith("all done")
    for j in chain_jobs:
        job = jobs[j]
        assert job is not None
        assert job.result is not None
        assert job.result.tool_calls == 3
        assert job.run_id is not None
        assert job.run_id.startswith("resp_")
        # Each response of the chain was recorded as it came: three of them.
        assert sum(1 for m in histories[j] if m.startswith("run recorded: resp_")) == 3
    assert len(t.effects) == 1 + 3 * 3
    assert len(set(t.effects)) == len(t.effects)
    assert {a for _, a in t.calls} == {1}
    finished = [
        sample.value
        for family in parser.text_string_to_metric_families(body.decode())
        for sample in family.samples
        if sample.name == "orchestrator_runs_finished_total"
    ]
    assert finished == [4.0]  # the run and the three chains
    stats = emu.responses_stats()
    assert stats.responses == {"completed": 9}
    assert stats.duplicate_outputs == 0


async def test_a_resumed_job_continues_from_its_recorded_response(emu: Emulator, db: Path) -> None:
    """The first worker dies holding a tool round (its lease lapses); the next one resumes from
    the recorded response, re-runs only the unsaved call (at attempt 2) and sends the round once.
    """
    cfg, t = lab.settings(db, emu.base_url), lab.Lab()
    async with lab.client(cfg) as c, responses(cfg) as r, SqliteStore(db) as st:
        job_id = await st.enqueue(response_job(lab.script([False, True])))
        first = worker.Worker(cfg, st, c, t.registry, worker_id="w1", responses=r)
        async with anyio.create_task_group() as tg:
            tg.start_soon(first.run)
            with anyio.fail_after(10):
                await t.holding.wait()
            tg.cancel_scope.cancel()  # dies mid-round: no release, the lease lapses
        held = await st.get(job_id)
        assert held is not None
        assert held.run_id is not None
        saved = await st.calls(held.run_id)
        t.gate.set()
        second = worker.Worker(cfg, st, c, t.registry, worker_id="w2", responses=r)
        await run_until_idle(second)
        job = await st.get(job_id)
    assert job is not None
    assert job.state is JobState.SUCCEEDED, job.result
    assert job.attempts == 2
    done_before = [cid for cid, rec in saved.items() if rec.output is not None]
    assert len(done_before) == 1  # the quick call's output was saved before the crash
    # The saved call never ran again; the held one ran again at attempt 2 and deduplicated.
    assert [cid for cid, _ in t.calls].count(done_before[0]) == 1
    assert sorted(a for _, a in t.calls) == [1, 1, 2]
    assert len(t.effects) == 2
    stats = emu.responses_stats()
    assert stats.duplicate_outputs == 0
    assert stats.responses == {"completed": 2}


def test_response_job_spec_round_trips_and_is_validated() -> None:
    spec = ResponseJob(model="m", input="hi", metadata={"k": "v"}, max_output_tokens=50)
    assert store_base.decode_spec(store_base.encode_spec(spec)) == spec
    assert spec.thread_id is None
    with pytest.raises(errors.InvalidJob, match="model or an agent"):
        ResponseJob(input="hi")
    with pytest.raises(errors.InvalidJob):
        ResponseJob(model=" spaced ")
    agent = ResponseJob(agent="my-agent", input="hi")
    assert msgspec.json.decode(store_base.encode_spec(agent))["spec"]["kind"] == "response"


@pytest.fixture
def keep_root_logger() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.mark.usefixtures("keep_root_logger")
def test_cli_run_and_enqueue_speak_responses(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert cli.main(["run", "--protocol", "responses", "--message", "hi", "--json"]) == 0
    lines = capsys.readouterr().out.splitlines()
    kinds = [json.loads(line)["type"] for line in lines]
    assert kinds[0] == "response.created"
    assert kinds[-1] == "response.finished"
    assert json.loads(lines[-1])["outcome"] == "completed"

    monkeypatch.setenv("ORCHESTRATOR_WORKER__SQLITE_PATH", str(tmp_path / "q.sqlite3"))
    args = ["enqueue", "--protocol", "responses", "--model", "gpt-4o", "--message", "hello"]
    assert cli.main(args) == 0
    job_id = capsys.readouterr().out.strip()
    assert cli.main(["status", job_id]) == 0
    assert "queued" in capsys.readouterr().out
    assert cli.main(["enqueue", "--protocol", "responses", "--message", "x"]) == 1
    assert "needs a model or an agent" in capsys.readouterr().err

    mcp = ["--mcp", "github=https://mcp.example.invalid/mcp"]
    assert cli.main([*args, *mcp]) == 0
    job_id = capsys.readouterr().out.strip()
    job = anyio.run(_job, tmp_path / "q.sqlite3", job_id)
    assert isinstance(job.spec, ResponseJob)
    [tool] = job.spec.tools
    assert (tool.type, tool.server_label, tool.require_approval) == ("mcp", "github", "always")
    with pytest.raises(SystemExit) as usage:  # no URL: a usage error
        cli.main([*args, "--mcp", "github"])
    assert usage.value.code == 2
    assert "LABEL=https://" in capsys.readouterr().err
    assert cli.main(["enqueue", "--assistant", "asst_1", *mcp]) == 1
    assert "--mcp: for a Responses job" in capsys.readouterr().err


async def _job(db: Path, job_id: str) -> store_base.Job:
    async with SqliteStore(db) as st:
        job = await st.get(job_id)
    assert job is not None
    return job


def test_wire_tool_from_a_registry_definition() -> None:
    t = lab.Lab()
    [definition] = t.registry.definitions()
    assert definition.function is not None
    tool = wire.Tool.function(definition.function)
    assert tool.type == "function"
    assert tool.name == "effect"
    assert isinstance(tool.parameters, dict)


async def test_a_job_out_of_attempts_cancels_the_response_it_left_running(
    emu: Emulator, db: Path
) -> None:
    """Its last worker died while the chain's response ran: the claim that finds the job out of
    attempts ends it failed and cancels that response (it would run on for nobody)."""
    cfg, t = lab.settings(db, emu.base_url, max_attempts=1), lab.Lab()
    stall = json.dumps([{"stall": True}])
    async with lab.client(cfg) as c, responses(cfg) as r, SqliteStore(db) as st:
        job_id = await st.enqueue(response_job(stall))
        ghost = await lab.ghost_claim(st, job_id)
        body = wire.CreateResponse(
            model="m", input="go", background=True, metadata={"emulator_script": stall}
        )
        left = (await r.create(body)).data
        await st.record_run(job_id, ghost.epoch, left.id)
        await run_until_idle(worker.Worker(cfg, st, c, t.registry, responses=r))
        job = await st.get(job_id)
        after = (await r.retrieve(left.id)).data
    assert job is not None
    assert job.state is JobState.FAILED
    assert after.status == "cancelled"
