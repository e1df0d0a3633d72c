"""Shared fixtures: the anyio plugin on asyncio only (aiohttp is tied to asyncio); job stores.

``pg_server`` starts one private PostgreSQL server for the session (skipped locally without
one, failing under ``CI``); ``pg_dsn`` gives each test a fresh, migrated database of it.
"""

from __future__ import annotations

import concurrent.futures
import itertools
import logging
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from worker_tools import pg

from orchestrator import store


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def cli_in_tmp(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Path]:
    """The CLI as a user runs it in an empty directory: no ``ORCHESTRATOR_*`` settings or API
    key from the environment; the root logger it configures is given back afterwards."""
    for name in list(os.environ):
        if name.startswith("ORCHESTRATOR_") or name == "OPENAI_API_KEY":
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield tmp_path
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.fixture(params=["memory", "sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def st(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[store.JobStore]:
    """Each store implementation in turn, open."""
    impl: store.JobStore
    if request.param == "memory":
        impl = store.MemoryStore()
    elif request.param == "sqlite":
        impl = store.SqliteStore(tmp_path / "j.db")
    else:
        from orchestrator.store.postgres import PostgresStore

        impl = PostgresStore(request.getfixturevalue("pg_dsn"))
    async with impl:
        yield impl


_databases = itertools.count()


def _sql(dsn: str, *statements: str) -> None:
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        for statement in statements:
            conn.execute(statement)  # type: ignore[arg-type]


async def _migrate(dsn: str) -> None:
    import psycopg

    from orchestrator.store import postgres_schema

    conn: Any
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        await postgres_schema.migrate(conn)


@pytest.fixture(scope="session")
def pg_server() -> Iterator[pg.Server]:
    with pg.running() as server:
        _sql(server.dsn(), "CREATE DATABASE template_orchestrator")
        # Its own thread: an async test may already run an event loop in this one.
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            pool.submit(anyio.run, _migrate, server.dsn("template_orchestrator")).result()
        yield server


@pytest.fixture
def pg_dsn(pg_server: pg.Server) -> str:
    """A fresh database with the schema migrated (copied from a migrated template)."""
    name = f"test_{next(_databases)}"
    _sql(pg_server.dsn(), f"CREATE DATABASE {name} TEMPLATE template_orchestrator")
    return pg_server.dsn(name)
