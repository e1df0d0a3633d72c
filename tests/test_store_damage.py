"""Damaged rows never block the queue; stored specs decode to a spec or ``InvalidJob``.

The quarantine rule under test is the one ``store.base`` states: a row ``claim`` cannot load is
failed with a ``quarantined: ...`` result in the claim's own transaction, its stored bytes kept,
and the claim goes on to the next job.
"""

from __future__ import annotations

import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import anyio
import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as hs

from orchestrator import errors, store
from orchestrator.protocols.assistants import models
from orchestrator.store import CreateJob, JobState, JobStore, base

pytestmark = pytest.mark.anyio

NESTED = b'{"v":1,"spec":{"kind":"create","assistant_id":"a","x":' + b"[" * 5000 + b"]" * 5000
DAMAGE = {
    "garbage": b"\x00\xffnot json",
    "newer version": b'{"v":2,"spec":{"kind":"create","assistant_id":"asst_1","future":true}}',
    "unknown kind": b'{"v":1,"spec":{"kind":"teleport"}}',
    "nested 5000 deep": NESTED + b"}}",
    "invalid utf-8": b'{"v":1,"spec":{"kind":"create","assistant_id":"\xc3\x28"}}',
    "bad id": b'{"v":1,"spec":{"kind":"create","assistant_id":" padded "}}',
    "truncated": b'{"v":1,"spec":{"kind":"cre',
}


def hello() -> CreateJob:
    return CreateJob(
        assistant_id="asst_1", messages=(models.MessageRequest(role="user", content="hi"),)
    )


def damage(st: JobStore, job_id: str, data: bytes) -> None:
    """Overwrite a job's stored spec, as a bad disk or a newer release would."""
    if isinstance(st, store.MemoryStore):
        st._stored[job_id] = data  # the in-process equivalent of the row's bytes
        return
    if not isinstance(st, store.SqliteStore):
        _pg(st, "UPDATE orchestrator_jobs SET spec = %s WHERE id = %s", data, job_id)
        return
    with sqlite3.connect(st.path) as conn:
        conn.execute("UPDATE jobs SET spec = ? WHERE id = ?", (data, job_id))


def _pg(st: JobStore, query: str, *args: object) -> tuple[object, ...] | None:
    import psycopg

    with psycopg.connect(st._dsn, autocommit=True) as conn:  # type: ignore[attr-defined]
        cur = conn.execute(query, args)  # type: ignore[arg-type]
        return cur.fetchone() if cur.description else None


def raw_row(path: str, job_id: str) -> tuple[object, ...]:
    with sqlite3.connect(path) as conn:
        row = conn.execute(
            "SELECT spec, state, result, lease_owner FROM jobs WHERE id = ?", (job_id,)
        ).fetchone()
    assert row is not None
    return tuple(row)


@pytest.mark.parametrize("kind", sorted(DAMAGE))
async def test_an_undecodable_spec_is_quarantined_and_the_next_job_claimed(
    st: JobStore, kind: str
) -> None:
    bad, good = await st.enqueue(hello()), await st.enqueue(hello())
    damage(st, bad, DAMAGE[kind])
    claimed = await st.claim("w1", lease_seconds=10)
    assert claimed is not None
    assert claimed.id == good
    assert await st.claim("w1", lease_seconds=10) is None
    counts = await st.counts()
    assert counts[JobState.FAILED] == 1
    assert counts[JobState.QUEUED] == 0
    history = [e.message for e in await st.history(bad)]
    assert history[-1].startswith("quarantined (row kept as stored): ")
    if isinstance(st, store.SqliteStore):
        spec, state, result, owner = raw_row(st.path, bad)
        assert spec == DAMAGE[kind]  # kept for the operator
        assert state == "failed"
        assert owner is None
        assert isinstance(result, bytes)
        assert msgspec.json.decode(result)["last_error"].startswith("quarantined: ")
    elif not isinstance(st, store.MemoryStore):
        row = _pg(
            st, "SELECT spec, state, result, lease_owner FROM orchestrator_jobs WHERE id = %s", bad
        )
        assert row is not None
        assert (bytes(row[0]), row[1], row[3]) == (DAMAGE[kind], "failed", None)  # type: ignore[arg-type]
        assert msgspec.json.decode(bytes(row[2]))["last_error"].startswith("quarantined: ")  # type: ignore[arg-type]
        with pytest.raises(errors.StoreError, match=bad):  # reads name it, never quarantine
            await st.get(bad)
    else:
        job = await st.get(bad)
        assert job is not None
        assert job.state is JobState.FAILED
        assert job.result is not None
        assert job.result.last_error is not None
        assert job.result.last_error.startswith("quarantined: ")


async def test_a_newer_spec_says_so(st: JobStore) -> None:
    bad = await st.enqueue(hello())
    damage(st, bad, DAMAGE["newer version"])
    assert await st.claim("w1", lease_seconds=10) is None
    history = [e.message for e in await st.history(bad)]
    assert "job spec version 2 is newer than 1" in history[-1]


async def test_an_expired_running_job_that_went_bad_is_quarantined(st: JobStore) -> None:
    bad = await st.enqueue(hello())
    first = await st.claim("w1", lease_seconds=10)
    assert first is not None
    damage(st, bad, DAMAGE["garbage"])
    assert await st.claim("w2", lease_seconds=10, now=first.updated_at + 11) is None
    assert (await st.counts())[JobState.FAILED] == 1
    # The first owner's renewals go on working for its other jobs and simply miss this one.
    assert await st.heartbeat_many([(bad, first.epoch)], lease_seconds=10) == set()


@pytest.mark.parametrize(
    ("column", "value"),
    [
        ("state", "paused"),
        ("state", b"\x01blob"),
        ("state", 7),
        ("attempts", "many"),
        ("result", b"{not json"),
        ("epoch", 1.5),
    ],
)
async def test_sqlite_rows_damaged_elsewhere_are_quarantined(
    tmp_path: Path, column: str, value: object
) -> None:
    async with store.SqliteStore(tmp_path / "j.db") as st:
        bad, good = await st.enqueue(hello()), await st.enqueue(hello())
        with sqlite3.connect(st.path) as conn:
            conn.execute(f"UPDATE jobs SET {column} = ? WHERE id = ?", (value, bad))
        counts = await st.counts()  # never raises on a state it does not know
        assert counts[JobState.QUEUED] == 1 + (column != "state")
        claimed = await st.claim("w1", lease_seconds=10)
        assert claimed is not None
        assert claimed.id == good
        assert await st.claim("w1", lease_seconds=10) is None  # idle: sweeps unknown states
        assert (await st.counts())[JobState.FAILED] == 1
        history = [e.message for e in await st.history(bad)]
        assert history[-1].startswith("quarantined (row kept as stored): ")
        if column == "state":  # the row now reads back, failed with the reason
            assert "unknown state" in history[-1]
            job = await st.get(bad)
            assert job is not None
            assert job.state is JobState.FAILED


async def test_reads_skip_or_name_an_unreadable_row(tmp_path: Path) -> None:
    async with store.SqliteStore(tmp_path / "j.db") as st:
        bad, good = await st.enqueue(hello()), await st.enqueue(hello())
        damage(st, bad, DAMAGE["garbage"])
        assert [j.id for j in await st.list_jobs()] == [good]
        with pytest.raises(errors.StoreError, match=f"job {bad}: invalid job spec"):
            await st.get(bad)


# --- read-only opening --------------------------------------------------------------------------


async def test_readonly_store_reads_without_writing(tmp_path: Path) -> None:
    path = tmp_path / "j.db"
    async with store.SqliteStore(path) as st:
        job_id = await st.enqueue(hello())
    before = path.read_bytes()
    async with store.SqliteStore(path, readonly=True) as ro:
        assert [j.id for j in await ro.list_jobs()] == [job_id]
        with pytest.raises(errors.StoreError, match="readonly"):
            await ro.enqueue(hello())
    assert path.read_bytes() == before
    missing = tmp_path / "never.db"
    async with store.SqliteStore(missing, readonly=True) as ro:
        assert await ro.list_jobs() == []
    assert not missing.exists()


@pytest.mark.skipif(sys.platform != "linux" or not shutil.which("setpriv"), reason="needs setpriv")
def test_status_reads_a_database_it_may_not_write(tmp_path: Path) -> None:
    """File 0444 in a directory 0555, read by a process without the power to override modes."""
    folder = tmp_path / "ro"
    folder.mkdir()
    path = folder / "jobs.sqlite3"

    async def fill() -> str:
        async with store.SqliteStore(path) as st:
            return await st.enqueue(hello())

    job_id = anyio.run(fill)
    cfg = tmp_path / "config.yaml"
    cfg.write_text(f'worker:\n  sqlite_path: "{path}"\n  health: null\n', encoding="utf-8")
    path.chmod(0o444)
    folder.chmod(0o555)
    drop = ["setpriv", "--bounding-set=-dac_override,-dac_read_search,-fowner"]
    argv = [sys.executable, "-m", "orchestrator.cli", "--config", str(cfg), "status"]
    try:
        done = subprocess.run(
            [*drop, *argv],
            check=False,
            capture_output=True,
            text=True,
            timeout=60,
            env={"PATH": "/usr/bin"},
        )
    finally:
        folder.chmod(0o755)
    assert done.returncode == 0, done.stderr
    assert job_id in done.stdout


# --- property: stored specs --------------------------------------------------------------------

_VALID = [
    base.encode_spec(hello()),
    base.encode_spec(store.AdoptJob(thread_id="thread_1", run_id="run_1")),
    base.encode_spec(
        CreateJob(
            assistant_id="asst_1",
            thread_id="thread_1",
            overrides=store.RunOverrides(model="m", temperature=0.5, metadata={"k": "v"}),
        )
    ),
]


def _mutate(data: bytes, edits: list[tuple[int, int, bytes]]) -> bytes:
    out = bytearray(data)
    for pos, cut, insert in edits:
        at = pos % (len(out) + 1)
        out[at : at + cut] = insert
    return bytes(out)


_edits = hs.lists(
    hs.tuples(hs.integers(0, 10_000), hs.integers(0, 4), hs.binary(max_size=6)),
    min_size=1,
    max_size=6,
)
_json_bits = hs.sampled_from(
    [b"[" * 3000, b"{", b"}", b'"', b"\\", b"\xff", b"\xed\xa0\x80", b"null", b"-1e999", b"2"]
)


def _decodes_or_refuses(data: object) -> None:
    try:
        spec = base.decode_spec(data)  # type: ignore[arg-type]
    except errors.InvalidJob:
        return
    assert isinstance(spec, CreateJob | store.AdoptJob)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(hs.binary(max_size=300))
def test_arbitrary_bytes_are_a_spec_or_invalid_job(data: bytes) -> None:
    _decodes_or_refuses(data)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(hs.sampled_from(_VALID), _edits, hs.lists(_json_bits, max_size=3))
def test_mutated_specs_are_a_spec_or_invalid_job(
    valid: bytes, edits: list[tuple[int, int, bytes]], bits: list[bytes]
) -> None:
    data = _mutate(valid, edits)
    for i, bit in enumerate(bits):
        data = _mutate(data, [(len(data) * (i + 1) // (len(bits) + 1), 0, bit)])
    _decodes_or_refuses(data)
    _decodes_or_refuses(data.decode("utf-8", "surrogateescape"))


@pytest.mark.parametrize("value", [None, 5, 1.5, "", "\udcff", [], NESTED.decode()])
def test_values_of_any_column_type_are_a_spec_or_invalid_job(value: object) -> None:
    with pytest.raises(errors.InvalidJob):
        base.decode_spec(value)  # type: ignore[arg-type]
