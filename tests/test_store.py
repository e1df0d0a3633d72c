"""The job store and ledger: one suite for every implementation, then SQLite-only behaviour."""

from __future__ import annotations

import os
import sqlite3
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import anyio
import msgspec
import pytest

from orchestrator import config, errors, store
from orchestrator.protocols.assistants import models
from orchestrator.store import AdoptJob, CreateJob, JobResult, JobState, JobStore

pytestmark = pytest.mark.anyio

LEASE = 10.0


def hello(thread_id: str | None = None) -> CreateJob:
    msg = models.MessageRequest(role="user", content="hello")
    return CreateJob(assistant_id="asst_1", thread_id=thread_id, messages=(msg,))


def done(status: str = "completed") -> JobResult:
    return JobResult(status=status, reply="hi", tool_calls=1)


@pytest.fixture
def t0() -> float:
    # Injected clocks start at real time so calls without `now=` stay consistent with them.
    return time.time()


async def claim(st: JobStore, worker: str, now: float, **kw: Any) -> store.Job:
    job = await st.claim(worker, lease_seconds=LEASE, now=now, **kw)
    assert job is not None
    return job


async def messages(st: JobStore, job_id: str) -> list[str]:
    return [event.message for event in await st.history(job_id)]


# --- the shared suite -------------------------------------------------------------------------


async def test_enqueue_claim_complete(st: JobStore, t0: float) -> None:
    job_id = await st.enqueue(hello())
    queued = await st.get(job_id)
    assert queued is not None
    assert (queued.state, queued.epoch, queued.attempts, queued.lease_owner) == (
        JobState.QUEUED,
        0,
        0,
        None,
    )
    assert queued.spec == hello()

    job = await claim(st, "w1", t0)
    assert job.id == job_id
    assert (job.state, job.epoch, job.attempts, job.lease_owner) == (JobState.RUNNING, 1, 1, "w1")
    assert job.lease_expires_at == pytest.approx(t0 + LEASE)
    assert await st.get(job_id) == job
    assert await st.claim("w2", lease_seconds=LEASE, now=t0) is None

    await st.complete(job_id, 1, JobState.SUCCEEDED, done())
    final = await st.get(job_id)
    assert final is not None
    assert final.state is JobState.SUCCEEDED
    assert final.result == done()
    assert (final.lease_owner, final.lease_expires_at) == (None, None)
    assert await st.claim("w2", lease_seconds=LEASE, now=t0 + 100) is None


async def test_spec_round_trips_with_overrides(st: JobStore) -> None:
    tool = models.ToolDefinition(
        type="function", function=models.FunctionDefinition(name="f", parameters={"a": 1})
    )
    overrides = store.RunOverrides(
        model="m", instructions=None, tools=[tool], metadata={"k": "v"}, temperature=0.5
    )
    spec = CreateJob(assistant_id="asst_1", thread_id="thread_1", overrides=overrides)
    job = await st.get(await st.enqueue(spec))
    assert job is not None
    assert job.spec == spec
    assert job.thread_id == "thread_1"
    body = models.encode(spec.run_request())
    assert msgspec.json.decode(body) == {
        "assistant_id": "asst_1",
        "model": "m",
        "instructions": None,
        "tools": [{"type": "function", "function": {"name": "f", "parameters": {"a": 1}}}],
        "metadata": {"k": "v"},
        "temperature": 0.5,
    }


async def test_adopt_job_records_thread_and_run(st: JobStore) -> None:
    job = await st.get(await st.enqueue(AdoptJob(thread_id="thread_1", run_id="run_1")))
    assert job is not None
    assert (job.thread_id, job.run_id) == ("thread_1", "run_1")


async def test_claim_order_is_enqueue_order(st: JobStore, t0: float) -> None:
    ids = [await st.enqueue(hello()) for _ in range(4)]
    claimed = [(await claim(st, "w", t0)).id for _ in range(4)]
    assert claimed == ids
    assert await st.claim("w", lease_seconds=LEASE, now=t0) is None


async def test_one_running_job_per_thread(st: JobStore, t0: float) -> None:
    a = await st.enqueue(hello("thread_1"))
    b = await st.enqueue(AdoptJob(thread_id="thread_1", run_id="run_9"))
    c = await st.enqueue(hello("thread_2"))
    assert (await claim(st, "w", t0)).id == a
    assert (await claim(st, "w", t0)).id == c  # b waits for a
    assert await st.claim("w", lease_seconds=LEASE, now=t0) is None
    # a's lease expiring frees the thread, but a (older) is taken over before b starts.
    assert (await claim(st, "w2", t0 + LEASE)).id == a
    await st.complete(a, 2, JobState.SUCCEEDED, done())
    assert (await claim(st, "w", t0 + LEASE)).id == b


async def test_recorded_new_thread_takes_the_lock(st: JobStore, t0: float) -> None:
    a = await st.enqueue(hello())
    job = await claim(st, "w1", t0)
    await st.record_thread(a, job.epoch, "thread_new")
    await st.enqueue(AdoptJob(thread_id="thread_new", run_id="run_1"))
    assert await st.claim("w2", lease_seconds=LEASE, now=t0) is None


async def test_expired_lease_is_reclaimed_with_new_epoch(st: JobStore, t0: float) -> None:
    job_id = await st.enqueue(hello())
    first = await claim(st, "w1", t0)
    assert await st.claim("w2", lease_seconds=LEASE, now=t0 + LEASE - 0.01) is None
    second = await claim(st, "w2", t0 + LEASE)
    assert second.id == job_id
    assert (second.epoch, second.attempts, second.lease_owner) == (2, 2, "w2")
    assert not await st.heartbeat(job_id, first.epoch, lease_seconds=LEASE, now=t0 + LEASE)
    assert await st.heartbeat(job_id, second.epoch, lease_seconds=LEASE, now=t0 + LEASE)
    assert "lease of w1 (epoch 1) expired; claimed by w2 (epoch 2, attempt 2)" in (
        await messages(st, job_id)
    )


async def test_heartbeat_extends_lease(st: JobStore, t0: float) -> None:
    job_id = await st.enqueue(hello())
    job = await claim(st, "w1", t0)
    assert await st.heartbeat(job_id, job.epoch, lease_seconds=LEASE, now=t0 + 8)
    assert await st.claim("w2", lease_seconds=LEASE, now=t0 + 12) is None
    # A lease that ran out but was not taken over yet can still be renewed.
    assert await st.heartbeat(job_id, job.epoch, lease_seconds=LEASE, now=t0 + 30)
    assert await st.claim("w2", lease_seconds=LEASE, now=t0 + 35) is None
    renewed = await st.get(job_id)
    assert renewed is not None
    assert renewed.lease_expires_at == pytest.approx(t0 + 40)


async def test_stale_epoch_writes_are_rejected(st: JobStore, t0: float) -> None:
    job_id = await st.enqueue(hello())
    old = await claim(st, "w1", t0)
    new = await claim(st, "w2", t0 + LEASE)
    attempts = [
        st.record_thread(job_id, old.epoch, "thread_x"),
        st.record_run(job_id, old.epoch, "run_x"),
        st.save_output(job_id, old.epoch, "run_x", "call_1", "late"),
        st.complete(job_id, old.epoch, JobState.FAILED, done("failed")),
        st.release(job_id, old.epoch),
    ]
    for write in attempts:
        with pytest.raises(errors.LeaseLost) as info:
            await write
        assert (info.value.job_id, info.value.epoch) == (job_id, old.epoch)
    job = await st.get(job_id)
    assert job == new
    assert await st.outputs("run_x") == {}
    log = await messages(st, job_id)
    assert "stale record_run rejected: epoch 1, job is running at epoch 2" in log
    assert sum("rejected" in line for line in log) == 5


async def test_writes_after_complete_are_rejected(st: JobStore, t0: float) -> None:
    job_id = await st.enqueue(hello())
    job = await claim(st, "w1", t0)
    await st.complete(job_id, job.epoch, JobState.FAILED, done("failed"))
    with pytest.raises(errors.LeaseLost):
        await st.record_run(job_id, job.epoch, "run_1")
    with pytest.raises(errors.LeaseLost):
        await st.complete(job_id, job.epoch, JobState.SUCCEEDED, done())
    assert not await st.heartbeat(job_id, job.epoch, lease_seconds=LEASE, now=t0)
    final = await st.get(job_id)
    assert final is not None
    assert (final.state, final.run_id) == (JobState.FAILED, None)


async def test_complete_needs_a_final_state(st: JobStore, t0: float) -> None:
    job_id = await st.enqueue(hello())
    job = await claim(st, "w1", t0)
    with pytest.raises(ValueError, match="succeeded or failed"):
        await st.complete(job_id, job.epoch, JobState.QUEUED, done())


async def test_heartbeat_many(st: JobStore, t0: float) -> None:
    ids = [await st.enqueue(hello()) for _ in range(3)]
    jobs = [await claim(st, "w1", t0) for _ in ids]
    await st.complete(ids[1], jobs[1].epoch, JobState.SUCCEEDED, done())
    # ids[2] is renewed by nobody and taken over; ids[0] is renewed first.
    assert await st.heartbeat_many([(ids[0], 1)], lease_seconds=LEASE, now=t0 + 5) == {ids[0]}
    assert (await claim(st, "w2", t0 + LEASE)).id == ids[2]
    leases = [(job.id, job.epoch) for job in jobs] + [("job_unknown", 1)]
    assert await st.heartbeat_many(leases, lease_seconds=LEASE, now=t0 + LEASE) == {ids[0]}
    assert await st.heartbeat_many([], lease_seconds=LEASE) == set()


async def test_release_requeues_without_counting_the_attempt(st: JobStore, t0: float) -> None:
    first = await st.enqueue(hello())
    later = await st.enqueue(hello())
    job = await claim(st, "w1", t0)
    await st.record_run(first, job.epoch, "run_1")
    await st.release(first, job.epoch)
    released = await st.get(first)
    assert released is not None
    assert (released.state, released.attempts, released.lease_owner) == (JobState.QUEUED, 0, None)
    assert released.run_id == "run_1"
    again = await claim(st, "w2", t0)
    assert (again.id, again.epoch, again.attempts) == (first, 2, 1)  # still ahead of `later`
    assert (await claim(st, "w2", t0)).id == later
    assert "released by w1" in await messages(st, first)


async def test_queueing_lock_deduplicates_queued_jobs(st: JobStore, t0: float) -> None:
    first = await st.enqueue(hello(), queueing_lock="daily")
    with pytest.raises(errors.AlreadyEnqueued) as info:
        await st.enqueue(hello(), queueing_lock="daily")
    assert info.value.job_id == first
    assert "daily" in str(info.value)
    await st.enqueue(hello(), queueing_lock="other")
    await st.enqueue(hello())
    assert sum((await st.counts()).values()) == 3
    job = await claim(st, "w", t0)  # the lock only covers queued jobs
    second = await st.enqueue(hello(), queueing_lock="daily")
    await st.release(job.id, job.epoch)  # both queued now: release never fails on the lock
    locked = [j.id for j in await st.list_jobs() if j.queueing_lock == "daily"]
    assert sorted(locked) == sorted([first, second])


async def test_max_attempts_fails_the_job(st: JobStore, t0: float) -> None:
    doomed = await st.enqueue(hello())
    await claim(st, "w1", t0, max_attempts=2)
    await claim(st, "w2", t0 + LEASE, max_attempts=2)
    fresh = await st.enqueue(hello())
    # The third try: doomed ends FAILED and comes back as such (so that the caller cancels its
    # run); the next call hands out the next job.
    gave_up = await claim(st, "w3", t0 + 2 * LEASE, max_attempts=2)
    assert (gave_up.id, gave_up.state) == (doomed, JobState.FAILED)
    assert (await claim(st, "w3", t0 + 2 * LEASE, max_attempts=2)).id == fresh
    job = await st.get(doomed)
    assert job == gave_up
    assert job is not None
    assert job.state is JobState.FAILED
    assert job.result is not None
    assert job.result.status == "error"
    assert job.result.last_error is not None
    assert "2 attempts" in job.result.last_error
    assert (job.lease_owner, job.attempts) == (None, 2)
    assert (await messages(st, doomed))[-1].startswith("failed: gave up after 2 attempts")


async def test_history_and_append(st: JobStore, t0: float) -> None:
    job_id = await st.enqueue(hello())
    job = await claim(st, "w1", t0)
    await st.record_thread(job_id, job.epoch, "thread_1")
    await st.record_thread(job_id, job.epoch, "thread_1")  # idempotent: no new line
    await st.record_run(job_id, job.epoch, "run_1")
    await st.record_run(job_id, job.epoch, "run_2")
    await st.append_history(job_id, job.epoch, "tool f called")
    await st.complete(job_id, job.epoch, JobState.SUCCEEDED, done())
    events = await st.history(job_id)
    assert [e.message for e in events] == [
        "enqueued",
        "claimed by w1 (epoch 1, attempt 1)",
        "thread recorded: thread_1",
        "run recorded: run_1",
        "run recorded: run_2 (replaces run_1)",
        "tool f called",
        "succeeded: run completed",
    ]
    assert [e.epoch for e in events] == [0, 1, 1, 1, 1, 1, 1]
    assert await st.history("job_unknown") == []
    with pytest.raises(errors.StoreError):
        await st.append_history("job_unknown", 0, "x")


async def test_thread_cannot_move(st: JobStore, t0: float) -> None:
    job_id = await st.enqueue(hello("thread_1"))
    job = await claim(st, "w1", t0)
    with pytest.raises(errors.StoreError, match="already on thread") as info:
        await st.record_thread(job_id, job.epoch, "thread_2")
    assert not isinstance(info.value, errors.LeaseLost)
    current = await st.get(job_id)
    assert current is not None
    assert current.thread_id == "thread_1"


async def test_counts_and_list_jobs(st: JobStore, t0: float) -> None:
    assert await st.counts() == dict.fromkeys(JobState, 0)
    ids = [await st.enqueue(hello()) for _ in range(4)]
    a = await claim(st, "w", t0)
    b = await claim(st, "w", t0)
    await st.complete(a.id, a.epoch, JobState.SUCCEEDED, done())
    assert await st.counts() == {
        JobState.QUEUED: 2,
        JobState.RUNNING: 1,
        JobState.WAITING_APPROVAL: 0,
        JobState.SUCCEEDED: 1,
        JobState.FAILED: 0,
    }
    assert [j.id for j in await st.list_jobs()] == ids[::-1]
    assert [j.id for j in await st.list_jobs(limit=2)] == ids[:1:-1]
    assert [j.id for j in await st.list_jobs(state=JobState.RUNNING)] == [b.id]
    assert await st.list_jobs(state=JobState.FAILED) == []


async def test_a_parked_job_waits_for_a_decision(st: JobStore, t0: float) -> None:
    job_id = await st.enqueue(hello())
    job = await claim(st, "w", t0)
    await st.record_run(job_id, job.epoch, "run_1")
    with pytest.raises(errors.LeaseLost):
        await st.park(job_id, job.epoch + 1, "waiting for approval: c1")
    await st.park(job_id, job.epoch, "waiting for approval: c1")
    parked = await st.get(job_id)
    assert parked is not None
    assert (parked.state, parked.attempts, parked.lease_owner) == (
        JobState.WAITING_APPROVAL,
        0,
        None,
    )
    assert await st.claim("w", lease_seconds=LEASE, now=t0 + 10 * LEASE) is None
    with pytest.raises(errors.LeaseLost):  # the parking claim's writes are fenced off now
        await st.save_output(job_id, job.epoch, "run_1", "c1", "late")
    await st.decide(job_id, {"c1": "approval:deny"})
    assert await st.outputs("run_1") == {"c1": "approval:deny"}
    again = await claim(st, "w", t0)
    assert (again.id, again.state, again.attempts) == (job_id, JobState.RUNNING, 1)
    assert any("waiting for approval" in m for m in await messages(st, job_id))
    with pytest.raises(errors.InvalidJob, match="not waiting"):
        await st.decide(job_id, {"c1": "approval:allow"})


async def test_ledger_is_fenced_by_epoch(st: JobStore, t0: float) -> None:
    job_id = await st.enqueue(hello())
    old = await claim(st, "w1", t0)
    await st.save_output(job_id, old.epoch, "run_1", "call_1", "first")
    await st.save_output(job_id, old.epoch, "run_1", "call_1", "again")  # first write stays
    await st.save_output(job_id, old.epoch, "run_1", "call_2", "two")
    assert await st.outputs("run_1") == {"call_1": "first", "call_2": "two"}
    new = await claim(st, "w2", t0 + LEASE)
    with pytest.raises(errors.LeaseLost):
        await st.save_output(job_id, old.epoch, "run_1", "call_1", "zombie")
    with pytest.raises(errors.LeaseLost):
        await st.save_output(job_id, old.epoch, "run_1", "call_3", "zombie")
    assert await st.outputs("run_1") == {"call_1": "first", "call_2": "two"}
    await st.save_output(job_id, new.epoch, "run_1", "call_1", "newer")
    assert await st.outputs("run_1") == {"call_1": "newer", "call_2": "two"}
    assert await st.outputs("run_other") == {}


async def test_round_lifecycle_counts_attempts_per_call(st: JobStore, t0: float) -> None:
    job_id = await st.enqueue(hello())
    first = await claim(st, "w1", t0)
    assert await st.begin_calls(job_id, first.epoch, "run_1", ["c1", "c2"], now=t0) == {
        "c1": 1,
        "c2": 1,
    }
    await st.save_output(job_id, first.epoch, "run_1", "c1", "one")
    assert await st.outputs("run_1") == {"c1": "one"}  # a begun call has no output yet
    second = await claim(st, "w2", t0 + LEASE)
    # c1 has its output and is not begun again; c2 may have run: its next attempt is 2.
    attempts = await st.begin_calls(job_id, second.epoch, "run_1", ["c1", "c2"], now=t0 + LEASE)
    assert attempts == {"c2": 2}
    await st.save_output(job_id, second.epoch, "run_1", "c2", "two")
    await st.mark_submitted(job_id, second.epoch, "run_1", ["c1", "c2"])
    calls = await st.calls("run_1")
    assert calls == {
        "c1": store.CallRecord(tool_call_id="c1", starts=1, output="one", submitted=True),
        "c2": store.CallRecord(tool_call_id="c2", starts=2, output="two", submitted=True),
    }
    assert await st.calls("run_other") == {}


async def test_round_writes_are_fenced_and_need_a_live_lease(st: JobStore, t0: float) -> None:
    job_id = await st.enqueue(hello())
    old = await claim(st, "w1", t0)
    assert await st.check_claim(job_id, old.epoch, now=t0 + 1)
    # The lease lapsed but nobody took the job yet: still no side effect may start.
    assert not await st.check_claim(job_id, old.epoch, now=t0 + LEASE)
    with pytest.raises(errors.LeaseLost):
        await st.begin_calls(job_id, old.epoch, "run_1", ["c1"], now=t0 + LEASE)
    new = await claim(st, "w2", t0 + LEASE)
    assert not await st.check_claim(job_id, old.epoch, now=t0 + LEASE)
    assert await st.check_claim(job_id, new.epoch, now=t0 + LEASE)
    with pytest.raises(errors.LeaseLost):
        await st.begin_calls(job_id, old.epoch, "run_1", ["c1"], now=t0)
    with pytest.raises(errors.LeaseLost):
        await st.mark_submitted(job_id, old.epoch, "run_1", ["c1"])
    assert await st.calls("run_1") == {}
    assert not await st.check_claim("job_missing", 1)
    assert any("begin_calls refused" in m for m in await messages(st, job_id))


@pytest.mark.parametrize(
    "spec",
    [
        pytest.param(CreateJob(assistant_id="a", messages=("hello",)), id="message-not-struct"),  # type: ignore[arg-type]
        pytest.param(
            CreateJob(assistant_id="a", overrides=store.RunOverrides(temperature="hot")),  # type: ignore[arg-type]
            id="override-type",
        ),
        pytest.param(
            CreateJob(
                assistant_id="a",
                messages=(models.MessageRequest(role="system", content="x"),),  # type: ignore[arg-type]
            ),
            id="bad-role",
        ),
        pytest.param({"kind": "create", "assistant_id": "a"}, id="dict"),
    ],
)
async def test_malformed_specs_are_rejected_at_enqueue(st: JobStore, spec: Any) -> None:
    with pytest.raises(errors.InvalidJob):
        await st.enqueue(spec)
    assert await st.counts() == dict.fromkeys(JobState, 0)


@pytest.mark.parametrize(
    "build",
    [
        lambda: CreateJob(assistant_id=""),
        lambda: CreateJob(assistant_id=" asst_1"),
        lambda: AdoptJob(thread_id="thread_1", run_id=""),
        lambda: CreateJob(assistant_id="a", messages=(models.MessageRequest("user", ""),)),
        lambda: CreateJob(assistant_id="a", thread_id=7),  # type: ignore[arg-type]
    ],
    ids=["empty-assistant", "spaces", "empty-run", "empty-content", "thread-id-type"],
)
def test_malformed_specs_are_rejected_when_built(build: Any) -> None:
    with pytest.raises(errors.InvalidJob) as info:
        build()
    assert isinstance(info.value, ValueError)


def test_decode_spec_for_the_cli() -> None:
    raw = b'{"v": 1, "spec": {"kind": "adopt", "thread_id": "thread_1", "run_id": "run_1"}}'
    assert store.decode_spec(raw) == AdoptJob(thread_id="thread_1", run_id="run_1")
    for bad in (
        b"{",
        b'{"v": 1, "spec": {"kind": "nope"}}',
        b'{"v": 1, "spec": {"kind": "adopt", "thread_id": "t"}}',
        b'{"v": 2, "spec": {"kind": "adopt", "thread_id": "t", "run_id": "r"}}',
    ):
        with pytest.raises(errors.InvalidJob):
            store.decode_spec(bad)


async def test_concurrent_claims_hand_out_each_job_once(st: JobStore) -> None:
    ids = {await st.enqueue(hello()) for _ in range(60)}
    claimed: list[str] = []

    async def worker(name: str) -> None:
        while (job := await st.claim(name, lease_seconds=LEASE)) is not None:
            claimed.append(job.id)
            await st.complete(job.id, job.epoch, JobState.SUCCEEDED, done())

    async with anyio.create_task_group() as tg:
        for i in range(8):
            tg.start_soon(worker, f"w{i}")
    assert sorted(claimed) == sorted(ids)


async def test_closed_store_refuses_calls(tmp_path: Path) -> None:
    for impl in (store.MemoryStore(), store.SqliteStore(tmp_path / "j.db")):
        with pytest.raises(errors.StoreError, match="not open"):
            await impl.enqueue(hello())


# --- SQLite only ------------------------------------------------------------------------------


async def test_sqlite_survives_close_and_reopen(tmp_path: Path, t0: float) -> None:
    path = tmp_path / "j.db"
    async with store.SqliteStore(path) as st:
        job_id = await st.enqueue(hello())
        job = await claim(st, "w1", t0)
        await st.record_thread(job_id, job.epoch, "thread_1")
        await st.record_run(job_id, job.epoch, "run_1")
        await st.save_output(job_id, job.epoch, "run_1", "call_1", "out")
        before = await st.get(job_id)
    async with store.SqliteStore(path) as st:
        assert await st.get(job_id) == before
        assert await st.outputs("run_1") == {"call_1": "out"}
        assert len(await st.history(job_id)) == 4
        # The new process resumes: the lease still belongs to epoch 1 until it expires.
        assert await st.claim("w2", lease_seconds=LEASE, now=t0 + 1) is None
        again = await claim(st, "w2", t0 + LEASE)
        await st.complete(job_id, again.epoch, JobState.SUCCEEDED, done())
    with sqlite3.connect(path) as raw:
        assert raw.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        assert raw.execute("PRAGMA user_version").fetchone() == (
            store.sqlite_schema.SCHEMA_VERSION,
        )
        assert raw.execute("SELECT state FROM jobs").fetchall() == [("succeeded",)]
    raw.close()


async def test_sqlite_migrates_a_version_1_ledger(tmp_path: Path, t0: float) -> None:
    path = tmp_path / "j.db"
    async with store.SqliteStore(path) as st:
        job_id = await st.enqueue(hello())
        job = await claim(st, "w1", t0)
    v1_outputs = """CREATE TABLE outputs (run_id TEXT NOT NULL, tool_call_id TEXT NOT NULL,
        job_id TEXT NOT NULL, epoch INTEGER NOT NULL, output TEXT NOT NULL,
        saved_at REAL NOT NULL, PRIMARY KEY (run_id, tool_call_id)) WITHOUT ROWID"""
    raw = sqlite3.connect(path)
    with raw:
        raw.execute("DROP TABLE calls")
        raw.execute(v1_outputs)
        raw.execute("INSERT INTO outputs VALUES ('run_1', 'c1', ?, 1, 'kept', 0)", (job_id,))
        raw.execute("PRAGMA user_version = 1")
    raw.close()
    async with store.SqliteStore(path) as st:
        assert await st.outputs("run_1") == {"c1": "kept"}
        assert await st.begin_calls(job_id, job.epoch, "run_1", ["c1", "c2"], now=t0) == {"c2": 1}
    raw = sqlite3.connect(path)
    assert raw.execute("PRAGMA user_version").fetchone() == (2,)
    assert raw.execute("SELECT name FROM sqlite_master WHERE name = 'outputs'").fetchall() == []
    raw.close()


async def test_two_stores_on_one_file_never_double_claim(tmp_path: Path) -> None:
    path = tmp_path / "j.db"
    async with store.SqliteStore(path) as a, store.SqliteStore(path) as b:
        ids = {await a.enqueue(hello()) for _ in range(200)}
        claimed: dict[str, list[str]] = {"a": [], "b": []}

        async def worker(name: str, st: JobStore) -> None:
            while (job := await st.claim(name, lease_seconds=LEASE)) is not None:
                claimed[name].append(job.id)
                await st.save_output(job.id, job.epoch, f"run_{job.id}", "call", name)
                await st.complete(job.id, job.epoch, JobState.SUCCEEDED, done())

        async with anyio.create_task_group() as tg:
            for _ in range(4):
                tg.start_soon(worker, "a", a)
                tg.start_soon(worker, "b", b)
        both = claimed["a"] + claimed["b"]
        assert len(both) == len(ids)
        assert set(both) == ids  # each job exactly once, whichever store won each race
        assert (await b.counts())[JobState.SUCCEEDED] == 200


_CLAIMER = textwrap.dedent(
    """
    import pathlib, sys, anyio
    from orchestrator import store

    async def main(path, name, ready, everyone):
        async with store.SqliteStore(path) as st:
            # Barrier: both processes start claiming together, so their claims contend.
            pathlib.Path(ready).touch()
            while not all(pathlib.Path(p).exists() for p in everyone.split(",")):
                await anyio.sleep(0.002)
            while (job := await st.claim(name, lease_seconds=30)) is not None:
                print(job.id, flush=True)
                await st.complete(job.id, job.epoch, store.JobState.SUCCEEDED,
                                  store.JobResult(status="completed"))

    anyio.run(main, *sys.argv[1:])
    """
)


async def test_two_processes_never_double_claim(tmp_path: Path) -> None:
    path = tmp_path / "j.db"
    async with store.SqliteStore(path) as st:
        ids = {await st.enqueue(hello()) for _ in range(150)}
    outputs: dict[str, list[str]] = {}
    ready = {name: str(tmp_path / f"ready-{name}") for name in ("p1", "p2")}

    async def run(name: str) -> None:
        args = [str(path), name, ready[name], ",".join(ready.values())]
        done = await anyio.run_process([sys.executable, "-c", _CLAIMER, *args])
        outputs[name] = done.stdout.decode().split()

    async with anyio.create_task_group() as tg:
        tg.start_soon(run, "p1")
        tg.start_soon(run, "p2")
    both = outputs["p1"] + outputs["p2"]
    assert len(both) == len(ids)
    assert set(both) == ids  # each job exactly once (one side may win every race on a busy box)


async def test_directory_path_is_named(tmp_path: Path) -> None:
    with pytest.raises(errors.StoreError, match=str(tmp_path)):
        async with store.SqliteStore(tmp_path):
            pass


async def test_missing_directory_is_named(tmp_path: Path) -> None:
    path = tmp_path / "nope" / "j.db"
    with pytest.raises(errors.StoreError, match=str(path)):
        async with store.SqliteStore(path):
            pass


async def test_non_database_file_is_named(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("these are not the pages you are looking for\n" * 200)
    with pytest.raises(errors.StoreError, match=f"{path}.*not a database"):
        async with store.SqliteStore(path):
            pass


async def test_foreign_database_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "other.db"
    with sqlite3.connect(path) as raw:
        raw.execute("CREATE TABLE something (x)")
    raw.close()
    with pytest.raises(errors.StoreError, match=f"{path}: not an orchestrator database"):
        async with store.SqliteStore(path):
            pass


async def test_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "j.db"
    async with store.SqliteStore(path):
        pass
    with sqlite3.connect(path) as raw:
        raw.execute("PRAGMA user_version = 99")
    raw.close()
    with pytest.raises(errors.StoreError, match=f"{path}: schema version 99"):
        async with store.SqliteStore(path):
            pass


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root reads anything")
async def test_unreadable_file_is_named(tmp_path: Path) -> None:
    path = tmp_path / "j.db"
    async with store.SqliteStore(path):
        pass
    path.chmod(0)
    try:
        with pytest.raises(errors.StoreError, match=str(path)):
            async with store.SqliteStore(path):
                pass
    finally:
        path.chmod(0o600)


async def test_locked_database_is_named(tmp_path: Path) -> None:
    path = tmp_path / "j.db"
    async with store.SqliteStore(path):
        pass
    holder = sqlite3.connect(path, isolation_level=None)
    try:
        holder.execute("BEGIN IMMEDIATE")
        async with store.SqliteStore(path, busy_timeout=0.05) as st:
            assert await st.counts() == dict.fromkeys(JobState, 0)  # WAL: reads go on
            with pytest.raises(errors.StoreError, match=f"{path}: database is locked"):
                await st.enqueue(hello())
            holder.execute("ROLLBACK")
            await st.enqueue(hello())  # the connection is usable once the lock is gone
            assert (await st.counts())[JobState.QUEUED] == 1
    finally:
        holder.close()


async def test_locked_new_database_is_named_at_open(tmp_path: Path) -> None:
    path = tmp_path / "j.db"
    holder = sqlite3.connect(path, isolation_level=None)
    try:
        holder.execute("BEGIN EXCLUSIVE")
        with pytest.raises(errors.StoreError, match=f"{path}: database is locked"):
            async with store.SqliteStore(path, busy_timeout=0.05):
                pass
    finally:
        holder.close()


def test_open_store_factory(tmp_path: Path) -> None:
    sqlite_store = store.open_store(config.WorkerConfig(sqlite_path=str(tmp_path / "x.db")))
    assert isinstance(sqlite_store, store.SqliteStore)
    assert sqlite_store.path == str(tmp_path / "x.db")
    assert isinstance(store.open_store(config.WorkerConfig(store="memory")), store.MemoryStore)
    postgres = config.WorkerConfig(
        store="postgres", postgres_dsn="postgresql://u:pw@db.example:5433/jobs", concurrency=4
    )
    pytest.importorskip("procrastinate", reason="the postgres extra is not installed")
    pg_store = store.open_store(postgres)
    assert repr(pg_store) == "PostgresStore('u@db.example:5433/jobs')"  # never the password
    assert pg_store.pool_size == 6  # type: ignore[attr-defined]
