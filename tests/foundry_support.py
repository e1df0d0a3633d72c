"""Test helpers for Foundry mode: an ``AsyncTokenCredential`` backed by the emulator's token
endpoint (playing Entra ID), shared by the SDK, orchestrator and load tests."""

from __future__ import annotations

from types import TracebackType
from typing import Any, NamedTuple

import aiohttp


class Token(NamedTuple):
    """What ``AsyncTokenCredential.get_token`` returns (azure-core's ``AccessToken`` shape)."""

    token: str
    expires_on: float


class EmulatorCredential:
    """Fetches tokens from ``POST /_emulator/token``; counts the fetches."""

    def __init__(self, root: str) -> None:
        self.root = root.rstrip("/")
        self.fetches = 0
        self.scopes: list[tuple[str, ...]] = []

    async def get_token(self, *scopes: str, **kwargs: Any) -> Token:
        self.fetches += 1
        self.scopes.append(scopes)
        async with (
            aiohttp.ClientSession() as session,
            session.post(self.root + "/_emulator/token") as resp,
        ):
            resp.raise_for_status()
            body = await resp.json()
        return Token(body["token"], float(body["expires_on"]))

    async def close(self) -> None:
        return None

    async def __aenter__(self) -> EmulatorCredential:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        return None


async def token_counts(root: str) -> dict[str, int]:
    """Tokens issued and requests refused so far."""
    async with aiohttp.ClientSession() as session, session.get(root + "/_emulator/tokens") as r:
        counts: dict[str, int] = await r.json()
        return counts
