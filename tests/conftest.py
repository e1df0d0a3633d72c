"""Shared fixtures: the anyio plugin on asyncio only (aiohttp is tied to asyncio); job stores."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from orchestrator import store


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(params=["memory", "sqlite"])
async def st(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[store.JobStore]:
    """Each store implementation in turn, open."""
    impl: store.JobStore = (
        store.MemoryStore() if request.param == "memory" else store.SqliteStore(tmp_path / "j.db")
    )
    async with impl:
        yield impl
