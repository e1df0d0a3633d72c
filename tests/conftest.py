"""Shared fixtures: the anyio plugin on asyncio only (aiohttp is tied to asyncio)."""

from __future__ import annotations

import pytest


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
