"""Shared fixtures: the anyio plugin on asyncio only (aiohttp is tied to asyncio); job stores."""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

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


@pytest.fixture(params=["memory", "sqlite"])
async def st(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[store.JobStore]:
    """Each store implementation in turn, open."""
    impl: store.JobStore = (
        store.MemoryStore() if request.param == "memory" else store.SqliteStore(tmp_path / "j.db")
    )
    async with impl:
        yield impl
