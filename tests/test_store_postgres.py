"""PostgreSQL-only behaviour of the store: migration, start-up errors, procrastinate's view,
several stores on one database, and a server restart under a live store.

The shared contract runs against PostgreSQL in ``test_store.py``.
"""

from __future__ import annotations

import subprocess
import sys

import anyio
import anyio.lowlevel
import pytest
from worker_tools import pg

from orchestrator import errors, models, store
from orchestrator.store import CreateJob, JobResult, JobState

psycopg = pytest.importorskip("psycopg", reason="the postgres extra is not installed")
from orchestrator.store.postgres import PostgresStore  # noqa: E402

pytestmark = [pytest.mark.anyio, pytest.mark.postgres]

LEASE = 10.0


def hello(thread_id: str | None = None) -> CreateJob:
    msg = models.MessageRequest(role="user", content="hello")
    return CreateJob(assistant_id="asst_1", thread_id=thread_id, messages=(msg,))


def sql(dsn: str, query: str) -> list[tuple[object, ...]]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        cur = conn.execute(query)  # type: ignore[arg-type]
        return cur.fetchall() if cur.description else []


def orchestrator(*args: str, dsn: str) -> subprocess.CompletedProcess[str]:
    env = {"ORCHESTRATOR_WORKER__STORE": "postgres", "ORCHESTRATOR_WORKER__POSTGRES_DSN": dsn}
    command = [sys.executable, "-m", "orchestrator.cli", *args]
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=60, check=False)


def test_migrate_command_creates_both_schemas_once(pg_server: pg.Server) -> None:
    dsn = pg_server.dsn()
    sql(dsn, "CREATE DATABASE fresh")
    fresh = pg_server.dsn("fresh")
    first = orchestrator("migrate", dsn=fresh)
    assert first.returncode == 0, first.stderr
    assert "applied procrastinate's schema" in first.stdout
    assert "applied orchestrator migration 1" in first.stdout
    again = orchestrator("migrate", dsn=fresh)
    assert again.returncode == 0, again.stderr
    assert "nothing to do" in again.stdout
    assert sql(fresh, "SELECT version FROM orchestrator_schema") == [(1,)]
    # enqueue and status work unchanged against it.
    enqueued = orchestrator("enqueue", "--assistant", "asst_1", "--message", "hi", dsn=fresh)
    assert enqueued.returncode == 0, enqueued.stderr
    job_id = enqueued.stdout.strip()
    status = orchestrator("status", job_id, dsn=fresh)
    assert status.returncode == 0, status.stderr
    assert "queued" in status.stdout
    assert "enqueued" in status.stdout


async def test_unmigrated_database_is_refused_with_the_fix(pg_server: pg.Server) -> None:
    sql(pg_server.dsn(), "CREATE DATABASE empty")
    with pytest.raises(errors.StoreError, match=r"schema version 0.*orchestrator migrate"):
        async with PostgresStore(pg_server.dsn("empty")):
            pass


async def test_unreachable_server_is_a_clear_error_without_the_password() -> None:
    dsn = "postgresql://someone:hunter2@127.0.0.1:1/jobs"  # nothing listens on port 1
    with pytest.raises(errors.StoreError) as info:
        async with PostgresStore(dsn, connect_timeout=2):
            pass
    text = str(info.value)
    assert "cannot connect to PostgreSQL someone@127.0.0.1:1/jobs" in text
    assert "hunter2" not in text


async def test_jobs_are_procrastinate_jobs_with_thread_lock_and_queueing_lock(pg_dsn: str) -> None:
    async with PostgresStore(pg_dsn) as st:
        on_thread = await st.enqueue(hello("thread_1"), queueing_lock="daily")
        new_thread = await st.enqueue(hello())
        rows = sql(
            pg_dsn,
            "SELECT o.id, p.queue_name, p.task_name, p.lock, p.queueing_lock, p.status,"
            " p.args->>'job_id' FROM orchestrator_jobs o"
            " JOIN procrastinate_jobs p ON p.id = o.procrastinate_id ORDER BY o.seq",
        )
        assert rows == [
            (on_thread, "orchestrator", "orchestrator.job", "thread_1", "daily", "todo", on_thread),
            (new_thread, "orchestrator", "orchestrator.job", None, None, "todo", new_thread),
        ]
        first = await st.claim("w1", lease_seconds=LEASE)
        second = await st.claim("w1", lease_seconds=LEASE)
        assert first is not None
        assert second is not None
        await st.record_thread(new_thread, second.epoch, "thread_2")  # takes the lock
        await st.complete(first.id, first.epoch, JobState.SUCCEEDED, JobResult(status="completed"))
        statuses = sql(
            pg_dsn,
            "SELECT p.status, p.lock, p.worker_id IS NOT NULL FROM orchestrator_jobs o"
            " JOIN procrastinate_jobs p ON p.id = o.procrastinate_id ORDER BY o.seq",
        )
        assert statuses == [("succeeded", "thread_1", True), ("doing", "thread_2", True)]
    # Closing the store unregisters its procrastinate worker.
    assert sql(pg_dsn, "SELECT count(*) FROM procrastinate_workers") == [(0,)]


async def test_stores_on_one_database_hand_out_each_job_once(pg_dsn: str) -> None:
    async with PostgresStore(pg_dsn) as a, PostgresStore(pg_dsn) as b:
        ids = {await a.enqueue(hello(f"thread_{i % 7}")) for i in range(120)}
        claimed: list[str] = []
        running: set[str] = set()
        overlaps: list[str] = []

        async def worker(name: str, st: PostgresStore) -> None:
            while (job := await st.claim(name, lease_seconds=LEASE)) is not None:
                assert job.thread_id is not None
                if job.thread_id in running:
                    overlaps.append(job.thread_id)
                running.add(job.thread_id)
                claimed.append(job.id)
                await anyio.lowlevel.checkpoint()
                running.discard(job.thread_id)
                await st.complete(job.id, job.epoch, JobState.SUCCEEDED, JobResult(status="ok"))

        async with anyio.create_task_group() as tg:
            for i in range(4):
                tg.start_soon(worker, f"a{i}", a)
                tg.start_soon(worker, f"b{i}", b)
    assert sorted(claimed) == sorted(ids)
    assert overlaps == []  # never two running jobs on one thread


async def test_a_restart_of_the_server_costs_calls_not_the_store(
    pg_server: pg.Server, pg_dsn: str
) -> None:
    async with PostgresStore(pg_dsn, connect_timeout=3) as st:
        job_id = await st.enqueue(hello())
        pg_server.stop()
        with pytest.raises(errors.StoreError, match=r"PostgreSQL postgres@127\.0\.0\.1"):
            await st.get(job_id)
        pg_server.start()
        # The pool replaces its dead connections: the same store works again.
        with anyio.fail_after(30):
            while True:
                try:
                    job = await st.claim("w1", lease_seconds=LEASE)
                    break
                except errors.StoreError:
                    await anyio.sleep(0.2)
        assert job is not None
        assert job.id == job_id
        assert await st.heartbeat(job_id, job.epoch, lease_seconds=LEASE)


async def test_queueing_lock_survives_release_and_dedups_again(pg_dsn: str) -> None:
    async with PostgresStore(pg_dsn) as st:
        first = await st.enqueue(hello(), queueing_lock="k")
        job = await st.claim("w", lease_seconds=LEASE)
        assert job is not None
        assert job.id == first
        second = await st.enqueue(hello(), queueing_lock="k")  # first is running
        await st.release(first, job.epoch)  # second still holds it in procrastinate
        with pytest.raises(errors.AlreadyEnqueued) as info:
            await st.enqueue(hello(), queueing_lock="k")
        assert info.value.job_id == second
        done = await st.claim("w", lease_seconds=LEASE)
        again = await st.claim("w", lease_seconds=LEASE)
        assert done is not None
        assert again is not None
        assert {done.id, again.id} == {first, second}
        assert (await st.counts())[JobState.RUNNING] == 2


async def test_open_store_reads_the_dsn_from_the_environment(pg_dsn: str) -> None:
    from orchestrator import config

    cfg = config.loads(
        "worker: {store: postgres, postgres_dsn: 'postgresql://nobody@127.0.0.1:1/x'}",
        env={"ORCHESTRATOR_WORKER__POSTGRES_DSN": pg_dsn},
    )
    async with store.open_store(cfg.worker) as st:
        assert isinstance(st, PostgresStore)
        assert (await st.counts())[JobState.QUEUED] == 0


async def test_dead_procrastinate_workers_are_pruned_and_a_pruned_one_registers_again(
    pg_dsn: str,
) -> None:
    async with PostgresStore(pg_dsn) as st:
        await st.enqueue(hello())
        # A worker killed long ago left its row; ours was pruned by someone else meanwhile.
        sql(pg_dsn, "INSERT INTO procrastinate_workers (last_heartbeat) VALUES ('2000-01-01')")
        sql(pg_dsn, "DELETE FROM procrastinate_workers WHERE last_heartbeat > '2000-01-01'")
        st._beaten_at = float("-inf")  # due for its heartbeat
        job = await st.claim("w1", lease_seconds=LEASE)
        assert job is not None
        rows = sql(pg_dsn, "SELECT id FROM procrastinate_workers")
        assert rows == [(st._worker_id,)]
        assert sql(pg_dsn, "SELECT worker_id FROM procrastinate_jobs") == rows


async def test_a_state_outside_the_job_states_cannot_be_stored(pg_dsn: str) -> None:
    async with PostgresStore(pg_dsn) as st:
        job_id = await st.enqueue(hello())
    with pytest.raises(psycopg.errors.CheckViolation):
        sql(pg_dsn, f"UPDATE orchestrator_jobs SET state = 'paused' WHERE id = '{job_id}'")
